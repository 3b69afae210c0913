using System.Globalization;
using AnomalySD.Data;
using AnomalySD.Pipeline;
using AnomalySD.Scoring;
using CommandLine;
using Microsoft.Extensions.Logging;
using SixLabors.ImageSharp;

namespace AnomalySD.Cli;

[Verb("detect", HelpText = "Score images (files or folders) with a checkpoint: per-image score, decision at a threshold, heatmap PNGs.")]
public sealed class DetectVerb : ScoringFlags
{
    [Option("checkpoint", Required = true, HelpText = "Checkpoint written by fit.")]
    public string Checkpoint { get; set; } = "";

    [Option("category", Required = true, HelpText = "Category of the images (one the checkpoint was fitted on).")]
    public string Category { get; set; } = "";

    [Value(0, MetaName = "inputs", Required = true, HelpText = "Image files or folders.")]
    public IEnumerable<string> Inputs { get; set; } = [];

    [Option("threshold", HelpText = "Decision threshold on the normalised score (default 0.5, the calibrated threshold); for an uncalibrated checkpoint, on the raw score (default: no decision).")]
    public double? Threshold { get; set; }

    public override void Validate()
    {
        base.Validate();
        RequireOneDevice("detect");
        if (Out is not null)
            foreach (string input in Inputs) PathGuard.Separate(Out, "--out", input, "input");
    }

    [Option("out", HelpText = "Folder for a picture per image (image | map | predicted region | (no ground truth) | inpainting), named after the input's path; locked while detect runs.")]
    public string? Out { get; set; }
}

public static class DetectCommand
{
    public static int Run(DetectVerb o, TextWriter output)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("detect");
        var files = InputFiles.Expand(o.Inputs);
        if (files.Count == 0) throw new FileNotFoundException($"no images found in {string.Join(", ", o.Inputs)}");
        if (o.ResolvedShard() is { } shard)
        {
            files = files.Where(f => shard.Contains(f.Name.Replace('\\', '/'))).ToList();
            log.LogInformation("shard {Shard}: {Count} of the inputs", shard, files.Count);
        }
        using var heatmaps = o.Out is null ? null : OutputFolder.Open(o.Out, OutputKind.Pictures); // writable and ours before any work
        var (model, meta) = Checkpoints.Load(o.Checkpoint, o.Device, o.Backbones(), log);
        using (model)
        {
            var setup = Checkpoints.Resolve(meta, o.ToRequest(), log);
            var prompts = setup.Metadata.Categories.FirstOrDefault(c => c.Category == o.Category)
                ?? throw new KeyNotFoundException($"category '{o.Category}' was not fitted in {o.Checkpoint} (fitted: {string.Join(", ", meta.Categories.Select(c => c.Category))})");
            var detector = new AnomalyDetector(model, setup.Detector);
            var calibration = setup.Metadata.Calibration.GetValueOrDefault(o.Category);
            if (calibration is null && o.CalibrateOn && meta.Calibration.Count == 0)
                log.LogInformation("this checkpoint has no calibration: raw scores only{Hint}", o.Threshold is null ? " (give --threshold for decisions)" : "");
            // Calibrated: decide on the normalised scale (0.5 = the calibrated threshold). Uncalibrated: on the raw score, if asked.
            double? threshold = calibration is not null ? o.Threshold ?? 0.5 : o.Threshold;
            int failures = 0;
            output.WriteLine("image\tscore\tnormalized" + (threshold is null ? "" : "\tdecision"));
            foreach (var (file, name) in files)
            {
                RgbImage image;
                try { image = ImageIO.LoadRgb(file, setup.Metadata.AnalysisSize); }
                catch (ImageLoadException e) { log.LogWarning("skipped: {Message}", e.Message); failures++; continue; }
                var s = detector.Score(o.Category, image, prompts.NoiseStrength, restored: heatmaps is not null);
                double? normalized = calibration?.Normalization.Apply(s.Score);
                double decided = normalized ?? s.Score;
                string decision = threshold is double t ? (decided >= t ? "\tanomalous" : "\tnormal") : "";
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{file}\t{s.Score:G6}\t{(normalized is double n ? n.ToString("F4", CultureInfo.InvariantCulture) : "n/a")}{decision}"));
                if (heatmaps is not null)
                {
                    // The report's panel; without calibration the map is scaled to this image's score.
                    var map = calibration?.Normalization.Apply(s.SmoothedMap)
                              ?? new Map2D(s.SmoothedMap.Height, s.SmoothedMap.Width, Array.ConvertAll(s.SmoothedMap.Data, v => v / Math.Max(s.Score, 1e-12)));
                    using var panel = Visuals.Panel(image, map, calibration is null ? null : Visuals.Region(s.SmoothedMap, calibration.PixelThreshold), null, s.Restored);
                    AtomicFile.Write(heatmaps.File(name + "_panel.png"), stream => panel.SaveAsPng(stream));
                }
            }
            heatmaps?.Complete();
            if (failures == 0) return 0;
            Console.Error.WriteLine($"anomalysd: {failures} image(s) skipped (named above)");
            return 3;
        }
    }
}
