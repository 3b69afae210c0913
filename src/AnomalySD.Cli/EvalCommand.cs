using System.Diagnostics;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Checkpoints;
using AnomalySD.Detection;
using AnomalySD.Evaluation;
using AnomalySD.IO;
using AnomalySD.Training;
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
        RequireDataApartFrom(Out);
    }
}

public static class EvalCommand
{
    public static int Run(EvalVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("eval");
        var shard = o.ResolvedShard();
        // The report folder is claimed (refused if it holds anything else), proved writable and locked before any work; a
        // shard's staging folder is made (and its --out checked) before any work too, and its folder replaced at the end.
        using var output = shard is null ? OutputFolder.Open(o.Out, OutputKind.Report) : null;
        var dataset = Datasets.Open(o.Data!);
        using var shardWriter = shard is null ? null : new ShardWriter(o.Out, dataset.Root, log);
        var watch = Stopwatch.StartNew();
        double fitSeconds = 0;
        Detector detector;
        if (o.Checkpoint is not null) detector = Detector.Open(o.Checkpoint, o.DetectorSettings(o.EvalSize), log);
        else
        {
            var fit = o.ToFitOptions();
            // The E-only baseline never runs the diffusion model: skip its training.
            if (o.Masks == MaskStrategy.Prototype) fit = fit with { UnetSteps = 0, DecoderSteps = 0, AutoencoderSteps = 0, Calibration = null };
            // Calibrate with what this run scores with.
            var request = o.ToRequest(o.EvalSize);
            if (fit.Calibration is { } c) fit = fit with { Calibration = c with { Scales = request.Scales, NumInferenceSteps = request.NumInferenceSteps } };
            var (model, m) = Fitting.Fit(dataset, FitFlags.FitCategories(o.Categories, dataset, log), fit, log, CliSupport.Progress());
            detector = Detector.FromModel(model, m, request, log);
            fitSeconds = watch.Elapsed.TotalSeconds;
        }
        using (detector)
        {
            var (categories, notFitted) = EvalCategories(o.Categories, dataset, detector.Metadata, o.Checkpoint, log);
            var run = RunInfo(o, detector, fitSeconds, notFitted);
            if (shard is { } s)
            {
                log.LogInformation("shard {Shard}: scoring its images; merge the {Count} shard folders with `anomalysd merge`", s, s.Count);
                var writer = shardWriter!;
                var result = Evaluator.Run(detector, dataset, categories, log, CliSupport.Progress(),
                                           new EvaluationOptions(o.MaxImages, detector.Setup.EvalSize, x => s.Contains(ShardSpec.RelativePath(dataset.Root, x.ImagePath)), writer.Add));
                var manifest = new JsonObject
                {
                    ["checkpoint_fingerprint"] = detector.Fingerprint,
                    ["checkpoint"] = Path.GetFullPath(o.Checkpoint!),
                    ["checkpoint_version"] = detector.Version,
                    ["data"] = Path.GetFullPath(dataset.Root),
                    ["data_fingerprint"] = ShardWriter.DataFingerprint(dataset, categories),
                    ["options"] = ShardOptions(run),
                    ["categories"] = new JsonArray(categories.Select(c => (JsonNode)JsonValue.Create(c)!).ToArray()),
                    ["calibration"] = new JsonObject(detector.Metadata.Calibration.Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value.ToJson()))),
                    ["shard_index"] = s.Index, ["shard_count"] = s.Count,
                    ["skipped"] = new JsonArray(result.Skipped.Select(x => (JsonNode)JsonValue.Create(x)!).ToArray()),
                    ["skipped_per_category"] = new JsonObject(result.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.Skipped))),
                    ["seconds_per_category"] = new JsonObject(result.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.Seconds))),
                    ["wall_seconds"] = watch.Elapsed.TotalSeconds,
                };
                writer.Commit(manifest);
                Console.WriteLine($"shard {s}: {result.Categories.Sum(c => c.Images)} images scored, {result.Skipped.Count} skipped, in {watch.Elapsed.TotalSeconds:F0} s; written to {o.Out}");
                return 0; // skips are recorded for merge, which reports them (exit 3 there)
            }
            var full = Evaluator.Run(detector, dataset, categories, log, CliSupport.Progress(), new EvaluationOptions(o.MaxImages, detector.Setup.EvalSize));
            run["wall_seconds_total"] = watch.Elapsed.TotalSeconds;
            output!.Replace(dir => ReportWriter.Write(dir, full, run));
            output.Complete();
            Console.WriteLine(ReportWriter.Table(full));
            Console.WriteLine($"wall time: {watch.Elapsed.TotalSeconds:F0} s (fit {fitSeconds:F0} s, eval {full.Seconds:F0} s); report: {Path.Combine(o.Out, "report.md")}");
            if (full.Skipped.Count == 0) return 0;
            Console.Error.WriteLine($"anomalysd: {full.Skipped.Count} image(s) skipped (named above and in results.json); the metrics cover the rest");
            return 3;
        }
    }

    /// <summary>
    /// The categories an evaluation scores: those named by --categories (each must be in the dataset and, with a checkpoint, fitted
    /// in it), or every category of the dataset that the model was fitted on. Dataset categories the checkpoint lacks are named in
    /// the log and in the results (returned second), never skipped silently.
    /// </summary>
    /// <exception cref="KeyNotFoundException">a named category that the dataset or the checkpoint does not have, or no category in common.</exception>
    public static (IReadOnlyList<string> Categories, IReadOnlyList<string> NotFitted) EvalCategories(string? list, IDataset dataset, CheckpointMetadata meta,
                                                                                                  string? checkpoint, ILogger log)
    {
        var fitted = meta.Categories.Select(c => c.Category).ToList();
        string source = checkpoint is null ? "this run's fit" : $"checkpoint '{checkpoint}'";
        if (list is not null)
        {
            var named = FitFlags.SelectCategories(list, dataset);
            var missing = named.Where(c => !fitted.Contains(c)).ToList();
            if (missing.Count > 0)
                throw new KeyNotFoundException($"categor{(missing.Count > 1 ? "ies" : "y")} {string.Join(", ", missing)} {(missing.Count > 1 ? "were" : "was")} not fitted in {source} (fitted: {string.Join(", ", fitted)})");
            return (named, []);
        }
        if (dataset.IgnoredFolders.Count > 0)
            log.LogWarning("'{Root}': ignored folder(s) {Folders}: neither train/good nor test/ inside", dataset.Root, string.Join(", ", dataset.IgnoredFolders));
        var both = dataset.Categories.Where(fitted.Contains).ToList();
        var notFitted = dataset.Categories.Where(c => !fitted.Contains(c)).ToList();
        if (both.Count == 0)
            throw new KeyNotFoundException($"'{dataset.Root}' has none of the categories fitted in {source} ({string.Join(", ", fitted)}); its categories: {string.Join(", ", dataset.Categories)}");
        if (notFitted.Count > 0)
            log.LogWarning("skipped categor{Plural} {Categories} of the dataset: not fitted in {Source}", notFitted.Count > 1 ? "ies" : "y", string.Join(", ", notFitted), source);
        var absent = fitted.Where(c => !dataset.Categories.Contains(c)).ToList();
        if (absent.Count > 0) log.LogInformation("fitted categor{Plural} {Categories} not in the dataset: not evaluated", absent.Count > 1 ? "ies" : "y", string.Join(", ", absent));
        return (both, notFitted);
    }

    /// <summary>What a run used, for results.json and report.md.</summary>
    private static JsonObject RunInfo(EvalVerb o, Detector detector, double fitSeconds, IReadOnlyList<string> notFitted)
    {
        var m = detector.Metadata;
        var d = detector.Setup.Detector;
        return new JsonObject
        {
            ["model"] = m.ModelSource, ["checkpoint"] = o.Checkpoint ?? detector.Source, ["checkpoint_version"] = detector.Version, ["shots"] = m.Shots,
            ["categories_not_fitted"] = notFitted.Count == 0 ? null : string.Join(", ", notFitted),
            ["inpaint_size"] = m.ImageSize, ["analysis_size"] = m.AnalysisSize, ["eval_size"] = detector.Setup.EvalSize == 0 ? "original" : detector.Setup.EvalSize,
            ["window_context"] = m.WindowContext.ToString(), ["distance_resolution"] = m.DistanceResolution.ToString().ToLowerInvariant(),
            ["feature_aggregation"] = m.FeatureAggregation,
            ["calibrated"] = m.Calibration.Count > 0 ? "yes (see calibration)" : detector.Setup.RawScaleReason is string why ? $"no ({why})"
                             : o.CalibrateOn ? "no (the checkpoint has no calibration)" : "no (--calibrate off)",
            ["bank_views"] = d.Views?.ToString() ?? "as fitted", ["matching"] = d.Matching.ToString(), ["image_score"] = d.ImageScore.ToString(),
            ["transductive"] = d.Transductive.ToString(),
            ["scales"] = string.Join(",", d.Scales ?? AnomalySD.Masks.MaskProposals.DefaultScales), ["max_images"] = o.MaxImages?.ToString() ?? "all",
            ["masks"] = d.Masks.ToString(), ["distance"] = m.Distance, ["num_inference_steps"] = d.Inpaint!.NumInferenceSteps,
            ["noise_strength"] = new JsonObject(m.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.NoiseStrength))),
            ["seed"] = o.Seed, ["device"] = o.Device, ["fit_seconds"] = fitSeconds,
        };
    }

    /// <summary>The options every shard of one evaluation must share (the run info without what may differ per process).</summary>
    private static JsonObject ShardOptions(JsonObject run)
    {
        var o = (JsonObject)run.DeepClone();
        foreach (string key in new[] { "device", "fit_seconds", "checkpoint", "checkpoint_version" }) o.Remove(key);
        return o;
    }
}
