using System.Diagnostics;
using System.Globalization;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Masks;
using AnomalySD.Native;
using AnomalySD.Pipeline;
using AnomalySD.Text;
using CommandLine;
using Microsoft.Extensions.Logging;
using SixLabors.ImageSharp;

namespace AnomalySD.Cli;

[Verb("bench", HelpText = "Latency per image of the paper's inference workload (85 grid masks + 1 prototype mask, λ of a 50-step schedule), naive vs batched.")]
public sealed class BenchOptions : EngineOptions
{
    [Option("model", Default = "compact", HelpText = "compact, sd2-inpainting (random weights) or a diffusers inpainting folder.")]
    public string Model { get; set; } = "compact";

    [Option("image-size", Default = 0, HelpText = "Resolution (0: 64 for compact, 512 otherwise).")]
    public int ImageSize { get; set; } = 0;

    [Option("dtype", Default = "F32", HelpText = "F32, F16 or BF16 (comma-separated to compare several).")]
    public string Dtype { get; set; } = "F32";

    [Option("modes", Default = "naive,batched", HelpText = "naive and/or batched.")]
    public string Modes { get; set; } = "naive,batched";

    [Option("images", Default = 1, HelpText = "Images timed per mode (after one warm-up).")]
    public int Images { get; set; } = 1;

    [Option("num-inference-steps", Default = 50, HelpText = "DDIM schedule length.")]
    public int NumInferenceSteps { get; set; } = 50;

    [Option("noise-strength", Default = 0.4, HelpText = "λ: fraction of the schedule re-noised.")]
    public double NoiseStrength { get; set; } = 0.4;

    [Option("scales", Default = "1,2,4,8", HelpText = "Grid scales k.")]
    public string Scales { get; set; } = "1,2,4,8";

    [Option("inpaint-batch", Default = 0, HelpText = "Masks per UNet batch in batched mode (0: from available memory).")]
    public int InpaintBatch { get; set; } = 0;

    [Option("prototype-bank", HelpText = "Instead: time and peak memory of a 4-shot prototype bank (4 rotations) and one error map at --image-size (default 512).")]
    public bool PrototypeBank { get; set; }

    public override void Validate()
    {
        Require(ImageSize >= 0 && ImageSize % 32 == 0, $"--image-size must be a positive multiple of 32 (or 0 for the default), got {ImageSize}");
        Require(Images >= 1, $"--images must be >= 1, got {Images}");
        Require(NumInferenceSteps >= 1, $"--num-inference-steps must be >= 1, got {NumInferenceSteps}");
        Require(NoiseStrength is >= 0 and <= 1, $"--noise-strength must be in [0, 1], got {NoiseStrength}");
        Require(InpaintBatch >= 0, $"--inpaint-batch must be >= 0, got {InpaintBatch}");
        ParseScales(Scales);
        foreach (string mode in CliSupport.SplitList(Modes))
            Require(mode is "naive" or "batched", $"--modes: unknown mode '{mode}' (naive, batched)");
        foreach (string d in CliSupport.SplitList(Dtype))
        {
            Require(Enum.TryParse<AsdDtype>(d, true, out var t) && t is AsdDtype.F32 or AsdDtype.F16 or AsdDtype.BF16, $"--dtype: '{d}' is not F32, F16 or BF16");
            Require(!(t == AsdDtype.F16 && Device == "cpu"), "--dtype F16 is not supported on the CPU (libtorch has no half-precision LayerNorm there); use F32 or BF16");
        }
    }
}

[Verb("detect", HelpText = "Score images (files or folders) with a checkpoint: per-image score, decision at a threshold, heatmap PNGs.")]
public sealed class DetectOptions : EngineOptions
{
    [Option("checkpoint", Required = true, HelpText = "Checkpoint written by fit.")]
    public string Checkpoint { get; set; } = "";

    [Option("category", Required = true, HelpText = "Category of the images (one the checkpoint was fitted on).")]
    public string Category { get; set; } = "";

    [Value(0, MetaName = "inputs", Required = true, HelpText = "Image files or folders.")]
    public IEnumerable<string> Inputs { get; set; } = [];

    [Option("threshold", HelpText = "Image-score threshold for the anomalous/normal decision (default: none, scores only).")]
    public double? Threshold { get; set; }

    [Option("out", HelpText = "Folder for heatmap overlay PNGs.")]
    public string? Out { get; set; }

    [Option("masks", Default = MaskStrategy.Full, HelpText = "Full (multi-scale + prototype), MultiScale, or Prototype (E only).")]
    public MaskStrategy Masks { get; set; } = MaskStrategy.Full;

    [Option("resnet18", HelpText = "ResNet18 weights (default: the build's resnet18_imagenet.safetensors).")]
    public string? ResNet18 { get; set; }

    [Option("alexnet", HelpText = "torchvision AlexNet weights, if the checkpoint uses the LPIPS-AlexNet distance.")]
    public string? AlexNet { get; set; }

    [Option("lpips", HelpText = "LPIPS v0.1 linear weights, if the checkpoint uses the LPIPS-AlexNet distance.")]
    public string? Lpips { get; set; }

    [Option("scales", Default = "1,2,4,8", HelpText = "Grid scales k.")]
    public string Scales { get; set; } = "1,2,4,8";

    [Option("num-inference-steps", Default = 50, HelpText = "DDIM schedule length.")]
    public int NumInferenceSteps { get; set; } = 50;

    [Option("noise-strength", HelpText = "λ (default: the category's value in the checkpoint).")]
    public double? NoiseStrength { get; set; }

    public override void Validate()
    {
        ParseScales(Scales);
        Require(NumInferenceSteps >= 1, $"--num-inference-steps must be >= 1, got {NumInferenceSteps}");
        Require(NoiseStrength is null || NoiseStrength is >= 0 and <= 1, $"--noise-strength must be in [0, 1], got {NoiseStrength}");
    }
}

public static class BenchDetectCommands
{
    public static int Bench(BenchOptions o, TextWriter output)
    {
        if (o.PrototypeBank) return BenchPrototypes(o, output);
        var scales = EngineOptions.ParseScales(o.Scales);
        foreach (string dtypeName in CliSupport.SplitList(o.Dtype))
        {
            var dtype = Enum.Parse<AsdDtype>(dtypeName, ignoreCase: true);
            bool preset = o.Model is "compact" or "sd2-inpainting";
            using var model = preset ? InpaintingModel.CreatePreset(o.Model, o.Seed, o.Device, dtype) : InpaintingModel.Load(o.Model, o.Device, dtype);
            int size = o.ImageSize > 0 ? o.ImageSize : o.Model == "compact" ? 64 : 512;
            var tokenizer = new HashPromptTokenizer();
            var prompts = AnomalySD.Prompts.PromptCatalog.BuiltIn().Get("bottle").All;
            model.SetCategory("bench", tokenizer.EncodePadded(prompts), tokenizer.MaxLength);
            var image = SyntheticImage(size, o.Seed);
            var masks = MaskProposals.Grid(size, size, scales).Select(g => g.Mask).ToList();
            masks.Add(BlobMask(size)); // stands in for the prototype-guided mask M^(p)
            var info = model.Info();
            output.WriteLine($"model {info["source"]}, {dtypeName}, device {o.Device}, {size}x{size}, {masks.Count} masks, " +
                             $"{o.NumInferenceSteps} steps x λ {o.NoiseStrength} = {(int)(o.NumInferenceSteps * o.NoiseStrength)} denoising steps per mask, " +
                             $"UNet {info["parameters"]!["unet"]} parameters, {EngineInfo.Query().NumThreads} CPU threads");
            // Warm-up (allocator, oneDNN kernels) outside the timings.
            model.Inpaint("bench", image, masks.Take(2).ToList(), new InpaintOptions(o.NumInferenceSteps, o.NoiseStrength, 2, o.Seed));
            var rows = new List<(string Mode, double Ms, double PeakMb)>();
            foreach (string mode in CliSupport.SplitList(o.Modes))
            {
                bool naive = mode == "naive";
                if (!naive && mode != "batched") throw new ArgumentException($"unknown mode '{mode}' (naive, batched)");
                var options = new InpaintOptions(o.NumInferenceSteps, o.NoiseStrength, naive ? 1 : o.InpaintBatch, o.Seed, naive);
                TryResetPeak(o.Device);
                var watch = Stopwatch.StartNew();
                for (int i = 0; i < o.Images; i++) model.Inpaint("bench", image, masks, options);
                double ms = watch.Elapsed.TotalMilliseconds / o.Images;
                rows.Add((mode, ms, TryPeak(o.Device) / 1048576.0));
            }
            if (rows.Any(r => r.Mode == "batched"))
                output.WriteLine($"batched: {(o.InpaintBatch > 0 ? o.InpaintBatch : model.AutoBatchSize(size, size, masks.Count))} masks per UNet batch" +
                                 (o.InpaintBatch > 0 ? " (--inpaint-batch)" : " (automatic)"));
            output.WriteLine("| mode | ms per image | peak MB |");
            output.WriteLine("|---|---|---|");
            foreach (var r in rows) output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {r.Mode} | {r.Ms:F0} | {(r.PeakMb > 0 ? r.PeakMb.ToString("F0", CultureInfo.InvariantCulture) : "n/a")} |"));
            var n = rows.FirstOrDefault(r => r.Mode == "naive");
            var b = rows.FirstOrDefault(r => r.Mode == "batched");
            if (n.Mode is not null && b.Mode is not null)
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"speedup: {n.Ms / b.Ms:F2}x"));
        }
        return 0;
    }

    /// <summary>eq. 13-14 costs: building a 4-shot bank (x 4 rotations) and one error map, with peak memory.</summary>
    private static int BenchPrototypes(BenchOptions o, TextWriter output)
    {
        int size = o.ImageSize > 0 ? o.ImageSize : 512;
        using var model = InpaintingModel.CreateCompact(o.Seed, o.Device);
        Fitting.ConfigureScoring(model, null, DistanceKind.Resnet18Uniform, null, null);
        var shots = Enumerable.Range(0, 4).Select(i => SyntheticImage(size, o.Seed + (ulong)i)).ToList();
        TryResetPeak(o.Device);
        long baseline = TryPeak(o.Device);
        var watch = Stopwatch.StartNew();
        model.AddPrototypes("bench", shots);
        double buildMs = watch.Elapsed.TotalMilliseconds;
        long buildPeak = TryPeak(o.Device);
        TryResetPeak(o.Device);
        watch.Restart();
        var map = model.ErrorMap("bench", SyntheticImage(size, o.Seed + 99));
        double mapMs = watch.Elapsed.TotalMilliseconds;
        long mapPeak = TryPeak(o.Device);
        output.WriteLine($"prototype bank: 4 shots x 4 rotations at {size}x{size} = {model.PrototypeRows("bench")} prototypes of 384 channels; error map {map.Height}x{map.Width}");
        output.WriteLine("| step | ms | process peak MB |");
        output.WriteLine("|---|---|---|");
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| build bank | {buildMs:F0} | {buildPeak / 1048576.0:F0} |"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| one error map | {mapMs:F0} | {mapPeak / 1048576.0:F0} |"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"(process peak before the bank: {baseline / 1048576.0:F0} MB)"));
        return 0;
    }

    public static int Detect(DetectOptions o, TextWriter output)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("detect");
        var (model, meta) = FitEvalCommands.LoadCheckpoint(o.Checkpoint, o.Device, o.ResNet18, o.AlexNet, o.Lpips, log);
        using (model)
        {
            var prompts = meta.Categories.FirstOrDefault(c => c.Category == o.Category)
                ?? throw new KeyNotFoundException($"category '{o.Category}' was not fitted in {o.Checkpoint} (fitted: {string.Join(", ", meta.Categories.Select(c => c.Category))})");
            var files = o.Inputs.SelectMany(i => Directory.Exists(i) ? DatasetFiles.ImagesIn(i) : [i]).ToList();
            if (files.Count == 0) throw new FileNotFoundException($"no images found in {string.Join(", ", o.Inputs)}");
            var detector = new AnomalyDetector(model, new DetectorOptions(meta.Shots == 0 && o.Masks == MaskStrategy.Full ? MaskStrategy.MultiScale : o.Masks,
                EngineOptions.ParseScales(o.Scales), Inpaint: new InpaintOptions(o.NumInferenceSteps, Seed: o.Seed)));
            if (o.Out is not null) Directory.CreateDirectory(o.Out);
            int failures = 0;
            output.WriteLine(o.Threshold is null ? "image\tscore" : "image\tscore\tdecision");
            foreach (string file in files)
            {
                RgbImage image;
                try { image = ImageIO.LoadRgb(file, meta.ImageSize); }
                catch (ImageLoadException e) { log.LogWarning("skipped: {Message}", e.Message); failures++; continue; }
                var s = detector.Score(o.Category, image, o.NoiseStrength ?? prompts.NoiseStrength);
                string decision = o.Threshold is double t ? (s.Score >= t ? "\tanomalous" : "\tnormal") : "";
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{file}\t{s.Score:G6}{decision}"));
                if (o.Out is not null)
                {
                    using var overlay = Visuals.Overlay(image, s.SmoothedMap, Math.Max(s.Score, 1e-12), null);
                    overlay.SaveAsPng(Path.Combine(o.Out, Path.GetFileNameWithoutExtension(file) + "_heatmap.png"));
                }
            }
            return failures == 0 ? 0 : 3;
        }
    }

    private static void TryResetPeak(string device)
    {
        try { EngineInfo.ResetPeakMemory(device); } catch (AsdUnsupportedException) { }
    }

    private static long TryPeak(string device)
    {
        try { return EngineInfo.PeakMemory(device); } catch (AsdUnsupportedException) { return 0; }
    }

    /// <summary>A smooth deterministic test image (sums of sinusoids).</summary>
    public static RgbImage SyntheticImage(int size, ulong seed)
    {
        var rng = new Random((int)seed);
        double f1 = 2 + rng.NextDouble() * 4, f2 = 2 + rng.NextDouble() * 4;
        var data = new float[3 * size * size];
        for (int c = 0; c < 3; c++)
        for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            data[(c * size + y) * size + x] = (float)(0.5 + 0.25 * Math.Sin(f1 * x / size * Math.PI * 2 + c) * Math.Cos(f2 * y / size * Math.PI * 2));
        return new RgbImage(size, size, data);
    }

    private static BinaryMask BlobMask(int size)
    {
        var data = new byte[size * size];
        for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            data[y * size + x] = (x - size * 0.6) * (x - size * 0.6) + (y - size * 0.4) * (y - size * 0.4) < size * size / 40.0 ? (byte)1 : (byte)0;
        return new BinaryMask(size, size, data);
    }
}
