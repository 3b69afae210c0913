using System.Diagnostics;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Pipeline;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

[Verb("eval", HelpText = "Evaluate a checkpoint (or fit, then evaluate) on a dataset's test split; writes results.json, report.md and figures (a shard: its scores and maps, for merge).")]
public sealed class EvalVerb : FitFlags
{
    [Option("checkpoint", HelpText = "A checkpoint written by fit (default: fit first with the fit flags).")]
    public string? Checkpoint { get; set; }

    [Option("out", Required = true, HelpText = "Report folder (with --shard: the shard's folder, written atomically, for merge).")]
    public string Out { get; set; } = "";

    [Option("max-images", HelpText = "Evaluate at most N test images per category (spread over normal and anomalous).")]
    public int? MaxImages { get; set; }

    public override void Validate()
    {
        base.Validate();
        Require(MaxImages is null || MaxImages >= 1, $"--max-images must be >= 1, got {MaxImages}");
        if (ResolvedShard() is { } shard) Require(Checkpoint is not null, $"shard {shard}: a shard never fits; write the checkpoint once with fit and pass --checkpoint");
        Require(CliSupport.SplitList(Device).Count == 1 || Checkpoint is not null, $"--device '{Device}': several engines need a checkpoint written by fit (--checkpoint)");
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
        var shard = o.ResolvedShard();
        // The report folder is proved writable and locked before any work; a shard's folder is replaced atomically at the end.
        using var output = shard is null ? OutputFolder.Open(o.Out) : null;
        // A shard's staging folder is made (and its --out checked) before any work too.
        using var shardWriter = shard is null ? null : new ShardWriter(o.Out, dataset.Root);
        var watch = Stopwatch.StartNew();
        var engines = new List<InpaintingModel>();
        CheckpointMetadata meta;
        double fitSeconds = 0;
        try
        {
            if (o.Checkpoint is not null)
            {
                CheckpointMetadata? first = null;
                foreach (string device in o.Devices())
                {
                    var (model, m) = Checkpoints.Load(o.Checkpoint, device, o.Backbones(), log);
                    engines.Add(model);
                    first ??= m;
                }
                meta = first!;
            }
            else
            {
                var fit = o.ToFitOptions();
                // The E-only baseline never runs the diffusion model: skip its training.
                if (o.Masks == MaskStrategy.Prototype) fit = fit with { UnetSteps = 0, DecoderSteps = 0, AutoencoderSteps = 0, Calibration = null };
                // Calibrate with what this run scores with.
                var request = o.ToRequest(o.EvalSize);
                if (fit.Calibration is { } c) fit = fit with { Calibration = c with { Scales = request.Scales, NumInferenceSteps = request.NumInferenceSteps } };
                var (model, m) = Fitting.Fit(dataset, FitFlags.SelectCategories(o.Categories, dataset), fit, log, CliSupport.Progress());
                engines.Add(model);
                meta = m;
                fitSeconds = watch.Elapsed.TotalSeconds;
            }
            var categories = o.Categories is null ? meta.Categories.Select(c => c.Category).ToList() : FitFlags.SelectCategories(o.Categories, dataset);
            var setup = Checkpoints.Resolve(meta, o.ToRequest(o.EvalSize), log);
            if (engines.Count > 1) log.LogInformation("{Count} engines ({Devices}) score from one queue", engines.Count, string.Join(", ", o.Devices()));
            var run = RunInfo(o, setup, fitSeconds);
            if (shard is { } s)
            {
                log.LogInformation("shard {Shard}: scoring its images; merge the {Count} shard folders with `anomalysd merge`", s, s.Count);
                var writer = shardWriter!;
                var result = Evaluation.Run(engines, setup.Metadata, dataset, categories, setup.Detector, log, CliSupport.Progress(),
                                            new EvaluationOptions(o.MaxImages, setup.EvalSize, s, writer.Add));
                var manifest = new JsonObject
                {
                    ["checkpoint_fingerprint"] = ShardWriter.CheckpointFingerprint(o.Checkpoint!),
                    ["checkpoint"] = Path.GetFullPath(o.Checkpoint!),
                    ["data"] = Path.GetFullPath(dataset.Root),
                    ["options"] = ShardOptions(run),
                    ["categories"] = new JsonArray(categories.Select(c => (JsonNode)JsonValue.Create(c)!).ToArray()),
                    ["calibration"] = new JsonObject(setup.Metadata.Calibration.Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value.ToJson()))),
                    ["shard_index"] = s.Index, ["shard_count"] = s.Count,
                    ["skipped"] = new JsonArray(result.Skipped.Select(x => (JsonNode)JsonValue.Create(x)!).ToArray()),
                    ["skipped_per_category"] = new JsonObject(result.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.Skipped))),
                    ["seconds_per_category"] = new JsonObject(result.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.Seconds))),
                    ["wall_seconds"] = watch.Elapsed.TotalSeconds,
                };
                writer.Commit(manifest);
                Console.WriteLine($"shard {s}: {result.Categories.Sum(c => c.Images)} images scored in {watch.Elapsed.TotalSeconds:F0} s; written to {o.Out}");
                return 0;
            }
            var full = Evaluation.Run(engines, setup.Metadata, dataset, categories, setup.Detector, log, CliSupport.Progress(),
                                      new EvaluationOptions(o.MaxImages, setup.EvalSize));
            run["wall_seconds_total"] = watch.Elapsed.TotalSeconds;
            ReportWriter.Write(output!.Path, full, run);
            Console.WriteLine(ReportWriter.Table(full));
            Console.WriteLine($"wall time: {watch.Elapsed.TotalSeconds:F0} s (fit {fitSeconds:F0} s, eval {full.Seconds:F0} s); report: {Path.Combine(o.Out, "report.md")}");
            return 0;
        }
        finally
        {
            foreach (var e in engines) e.Dispose();
        }
    }

    /// <summary>What a run used, for results.json and report.md.</summary>
    private static JsonObject RunInfo(EvalVerb o, ScoringSetup setup, double fitSeconds)
    {
        var m = setup.Metadata;
        return new JsonObject
        {
            ["model"] = m.ModelSource, ["checkpoint"] = o.Checkpoint ?? "(fitted in this run, not saved)", ["shots"] = m.Shots,
            ["inpaint_size"] = m.ImageSize, ["analysis_size"] = m.AnalysisSize, ["eval_size"] = setup.EvalSize == 0 ? "original" : setup.EvalSize,
            ["window_context"] = m.WindowContext.ToString(), ["distance_resolution"] = m.DistanceResolution.ToString().ToLowerInvariant(),
            ["feature_aggregation"] = m.FeatureAggregation,
            ["calibrated"] = m.Calibration.Count > 0 ? "yes (see calibration)" : o.CalibrateOn ? "no (the checkpoint has no calibration)" : "no (--calibrate off)",
            ["scales"] = string.Join(",", setup.Detector.Scales ?? AnomalySD.Masks.MaskProposals.DefaultScales), ["max_images"] = o.MaxImages?.ToString() ?? "all",
            ["masks"] = setup.Detector.Masks.ToString(), ["distance"] = m.Distance, ["num_inference_steps"] = setup.Detector.Inpaint!.NumInferenceSteps,
            ["noise_strength"] = new JsonObject(m.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.NoiseStrength))),
            ["seed"] = o.Seed, ["device"] = o.Device, ["fit_seconds"] = fitSeconds,
        };
    }

    /// <summary>The options every shard of one evaluation must share (the run info without what may differ per process).</summary>
    private static JsonObject ShardOptions(JsonObject run)
    {
        var o = (JsonObject)run.DeepClone();
        foreach (string key in new[] { "device", "fit_seconds", "checkpoint" }) o.Remove(key);
        return o;
    }
}
