using System.Globalization;
using AnomalySD.Data;
using AnomalySD.Pipeline;
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

    [Option("threshold", HelpText = "Image-score threshold for the anomalous/normal decision (default: none, scores only).")]
    public double? Threshold { get; set; }

    [Option("out", HelpText = "Folder for heatmap overlay PNGs (named after each input's path; the folder is locked while detect runs).")]
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
        using var heatmaps = o.Out is null ? null : OutputFolder.Open(o.Out); // writable and ours before any work
        var (model, meta) = Checkpoints.Load(o.Checkpoint, o.Device, o.Backbones(), log);
        using (model)
        {
            var setup = Checkpoints.Resolve(meta, o.ToRequest(), log);
            var prompts = setup.Metadata.Categories.FirstOrDefault(c => c.Category == o.Category)
                ?? throw new KeyNotFoundException($"category '{o.Category}' was not fitted in {o.Checkpoint} (fitted: {string.Join(", ", meta.Categories.Select(c => c.Category))})");
            var detector = new AnomalyDetector(model, setup.Detector);
            int failures = 0;
            output.WriteLine(o.Threshold is null ? "image\tscore" : "image\tscore\tdecision");
            foreach (var (file, name) in files)
            {
                RgbImage image;
                try { image = ImageIO.LoadRgb(file, setup.Metadata.AnalysisSize); }
                catch (ImageLoadException e) { log.LogWarning("skipped: {Message}", e.Message); failures++; continue; }
                var s = detector.Score(o.Category, image, prompts.NoiseStrength);
                string decision = o.Threshold is double t ? (s.Score >= t ? "\tanomalous" : "\tnormal") : "";
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{file}\t{s.Score:G6}{decision}"));
                if (heatmaps is not null)
                {
                    using var overlay = Visuals.Overlay(image, s.SmoothedMap, Math.Max(s.Score, 1e-12), null);
                    AtomicFile.Write(heatmaps.File(name + "_heatmap.png"), stream => overlay.SaveAsPng(stream));
                }
            }
            return failures == 0 ? 0 : 3;
        }
    }
}
