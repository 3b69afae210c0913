using System.Diagnostics;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Pipeline;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

[Verb("eval", HelpText = "Evaluate a checkpoint (or fit, then evaluate) on a dataset's test split; writes results.json, report.md and figures.")]
public sealed class EvalVerb : FitFlags
{
    [Option("checkpoint", HelpText = "A checkpoint written by fit (default: fit first with the fit flags).")]
    public string? Checkpoint { get; set; }

    [Option("out", Required = true, HelpText = "Report folder.")]
    public string Out { get; set; } = "";

    [Option("max-images", HelpText = "Evaluate at most N test images per category (spread over normal and anomalous).")]
    public int? MaxImages { get; set; }

    public override void Validate()
    {
        base.Validate();
        Require(MaxImages is null || MaxImages >= 1, $"--max-images must be >= 1, got {MaxImages}");
    }
}

public static class EvalCommand
{
    public static int Run(EvalVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("eval");
        if (o.Data is null) throw new ArgumentException("--data is required");
        var dataset = Datasets.Open(o.Data);
        using var output = OutputFolder.Open(o.Out); // writable and ours before any work
        var watch = Stopwatch.StartNew();
        InpaintingModel model;
        CheckpointMetadata meta;
        double fitSeconds = 0;
        if (o.Checkpoint is not null)
        {
            (model, meta) = Checkpoints.Load(o.Checkpoint, o.Device, o.Backbones(), log);
        }
        else
        {
            var fit = o.ToFitOptions();
            // The E-only baseline never runs the diffusion model: skip its training.
            if (o.Masks == MaskStrategy.Prototype) fit = fit with { UnetSteps = 0, DecoderSteps = 0, AutoencoderSteps = 0, Calibration = null };
            // Calibrate with what this run scores with.
            var request = o.ToRequest(o.EvalSize);
            if (fit.Calibration is { } c) fit = fit with { Calibration = c with { Scales = request.Scales, NumInferenceSteps = request.NumInferenceSteps } };
            (model, meta) = Fitting.Fit(dataset, FitFlags.SelectCategories(o.Categories, dataset), fit, log, CliSupport.Progress());
            fitSeconds = watch.Elapsed.TotalSeconds;
        }
        using (model)
        {
            var categories = o.Categories is null ? meta.Categories.Select(c => c.Category).ToList() : FitFlags.SelectCategories(o.Categories, dataset);
            var setup = Checkpoints.Resolve(meta, o.ToRequest(o.EvalSize), log);
            var result = Evaluation.Run(model, setup.Metadata, dataset, categories, setup.Detector, log, CliSupport.Progress(), o.MaxImages, setup.EvalSize);
            var m = setup.Metadata;
            var run = new JsonObject
            {
                ["model"] = m.ModelSource, ["checkpoint"] = o.Checkpoint ?? "(fitted in this run, not saved)", ["shots"] = m.Shots,
                ["inpaint_size"] = m.ImageSize, ["analysis_size"] = m.AnalysisSize, ["eval_size"] = setup.EvalSize == 0 ? "original" : setup.EvalSize,
                ["window_context"] = m.WindowContext.ToString(), ["feature_aggregation"] = m.FeatureAggregation,
                ["calibrated"] = m.Calibration.Count > 0 ? "yes (see calibration)" : o.CalibrateOn ? "no (the checkpoint has no calibration)" : "no (--calibrate off)",
                ["scales"] = string.Join(",", setup.Detector.Scales ?? AnomalySD.Masks.MaskProposals.DefaultScales), ["max_images"] = o.MaxImages?.ToString() ?? "all",
                ["masks"] = setup.Detector.Masks.ToString(), ["distance"] = m.Distance, ["num_inference_steps"] = setup.Detector.Inpaint!.NumInferenceSteps,
                ["noise_strength"] = new JsonObject(m.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.NoiseStrength))),
                ["seed"] = o.Seed, ["device"] = o.Device, ["fit_seconds"] = fitSeconds,
            };
            run["wall_seconds_total"] = watch.Elapsed.TotalSeconds;
            ReportWriter.Write(output.Path, result, run);
            Console.WriteLine(ReportWriter.Table(result));
            Console.WriteLine($"wall time: {watch.Elapsed.TotalSeconds:F0} s (fit {fitSeconds:F0} s, eval {result.Seconds:F0} s); report: {Path.Combine(o.Out, "report.md")}");
        }
        return 0;
    }
}
