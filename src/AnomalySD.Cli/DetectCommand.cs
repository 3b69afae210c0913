using System.Globalization;
using AnomalySD.Data;
using AnomalySD.Detection;
using AnomalySD.IO;
using AnomalySD.Visualization;
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
        using var pictures = o.Out is null ? null : OutputFolder.Open(o.Out, OutputKind.Pictures); // writable and ours before any work
        using var detector = Detector.Open(o.Checkpoint, o.DetectorSettings(), log);
        var post = detector.PostProcessor(o.Category, o.Threshold);
        detector.Category(o.Category);
        if (!post.IsCalibrated && o.CalibrateOn && detector.Metadata.Calibration.Count == 0 && detector.Setup.RawScaleReason is null)
            log.LogInformation("this checkpoint has no calibration: raw scores only{Hint}", o.Threshold is null ? " (give --threshold for decisions)" : "");
        int failures = 0;
        output.WriteLine("image\tscore\tnormalized" + (post.Threshold is null ? "" : "\tdecision"));
        void Write(string file, string name, RgbImage image, DetectionResult r)
        {
            string decision = r.IsAnomalous is bool anomalous ? (anomalous ? "\tanomalous" : "\tnormal") : "";
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{file}\t{r.RawScore:G9}\t{(r.Score is double n ? n.ToString("F4", CultureInfo.InvariantCulture) : "n/a")}{decision}"));
            if (pictures is not null)
            {
                using var panel = Visuals.Panel(image, r.DisplayMap, r.PredictedMask, null, r.Restored);
                AtomicFile.Write(pictures.File(name + "_panel.png"), stream => panel.SaveAsPng(stream));
            }
        }
        RgbImage? Decode(string file)
        {
            try { return detector.Decode(file); }
            catch (ImageLoadException e) { log.LogWarning("skipped: {Message}", e.Message); failures++; return null; }
        }
        if (detector.Setup.Detector.Transductive.Enabled)
        {
            // One set: every input of the run is decoded first, then scored against the others.
            var set = files.Select(f => (Path: f.File, f.Name, Image: Decode(f.File))).Where(x => x.Image is not null).ToList();
            if (set.Count < 2) throw new ArgumentException($"--transductive {o.Transductive} compares each image with the others of the run, and {set.Count} image(s) could be read");
            var results = detector.DetectTransductive(o.Category, set.Select(x => x.Image!).ToList(), o.Threshold);
            for (int k = 0; k < set.Count; k++) Write(set[k].Path, set[k].Name, set[k].Image!, results[k]);
        }
        else
        {
            foreach (var (file, name) in files)
            {
                if (Decode(file) is not { } image) continue;
                Write(file, name, image, detector.Detect(o.Category, [image], restored: pictures is not null, threshold: o.Threshold)[0]);
            }
        }
        pictures?.Complete();
        if (failures == 0) return 0;
        Console.Error.WriteLine($"anomalysd: {failures} image(s) skipped (named above)");
        return 3;
    }
}
