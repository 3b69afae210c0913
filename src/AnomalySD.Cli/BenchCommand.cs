using System.Diagnostics;
using System.Globalization;
using AnomalySD.Checkpoints;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Masks;
using AnomalySD.Detection;
using AnomalySD.Training;
using AnomalySD.Text;
using CommandLine;

namespace AnomalySD.Cli;

[Verb("bench", HelpText = "Latency per image of the paper's inference workload (85 grid masks + 1 prototype mask, λ of a 50-step schedule), naive vs batched, with and without windows.")]
public sealed class BenchVerb : EngineFlags
{
    [Option("model", Default = "compact", HelpText = "compact, sd2-inpainting (random weights), a diffusers inpainting folder or a single-file checkpoint (.safetensors / .ckpt).")]
    public string Model { get; set; } = "compact";

    [Option("model-config", HelpText = "Single files: a diffusers-layout config folder (unet/, vae/, text_encoder/ config.json) for files that are not a standard SD model.")]
    public string? ModelConfig { get; set; }

    [Option("load-only", HelpText = "Instead: load --model once and report the load time and this process's peak resident memory (run it once per process).")]
    public bool LoadOnly { get; set; }

    [Option("write-single-file", HelpText = "Instead: write the preset --model (random weights, first --dtype) as one original-layout single file (safetensors) to this path.")]
    public string? WriteSingleFile { get; set; }

    [Option("image-size", Default = 0, HelpText = "Inpainting resolution (0: 64 for compact, 512 otherwise).")]
    public int ImageSize { get; set; } = 0;

    [Option("analysis-size", Default = 0, HelpText = "Analysis resolution of the image and masks (0: 256 for compact, 512 otherwise).")]
    public int AnalysisSize { get; set; } = 0;

    [Option("window-context", HelpText = "Window contexts to time, comma-separated ('full' or a margin); default: the default context (full) and windows with margin 1.0.")]
    public string? WindowContext { get; set; }

    [Option("dtype", Default = "F32", HelpText = "F32, F16 or BF16 (comma-separated to compare several).")]
    public string Dtype { get; set; } = "F32";

    [Option("modes", Default = "naive,batched", HelpText = "naive and/or batched.")]
    public string Modes { get; set; } = "naive,batched";

    [Option("images", Default = 1, HelpText = "Images timed per mode (after one warm-up); the table gives the median and the minimum.")]
    public int Images { get; set; } = 1;

    [Option("num-inference-steps", Default = 50, HelpText = "DDIM schedule length.")]
    public int NumInferenceSteps { get; set; } = 50;

    [Option("noise-strength", Default = 0.4, HelpText = "λ: fraction of the schedule re-noised.")]
    public double NoiseStrength { get; set; } = 0.4;

    [Option("scales", Default = "1,2,4,8", HelpText = "Grid scales k.")]
    public string Scales { get; set; } = "1,2,4,8";

    [Option("inpaint-batch", Default = 0, HelpText = "Masks per UNet batch in batched mode (0: from available memory).")]
    public int InpaintBatch { get; set; } = 0;

    [Option("prototype-bank", HelpText = "Instead: time and peak memory of a 4-shot prototype bank (4 rotations) and one error map at --analysis-size (default 512).")]
    public bool PrototypeBank { get; set; }

    public IReadOnlyList<WindowContext> Windows =>
        WindowContext is null ? new[] { Resolutions.DefaultWindowContext, Detection.WindowContext.Full, new(1.0) }.Distinct().ToList() : CliSupport.SplitList(WindowContext).Select(Detection.WindowContext.Parse).Distinct().ToList();

    public override void Validate()
    {
        base.Validate();
        RequireOneDevice("bench");
        Require(ImageSize >= 0 && ImageSize % 32 == 0, $"--image-size must be a positive multiple of 32 (or 0 for the default), got {ImageSize}");
        Require(AnalysisSize >= 0 && AnalysisSize % 32 == 0, $"--analysis-size must be a positive multiple of 32 (or 0 for the default), got {AnalysisSize}");
        Require(Images >= 1, $"--images must be >= 1, got {Images}");
        Require(NumInferenceSteps >= 1, $"--num-inference-steps must be >= 1, got {NumInferenceSteps}");
        Require(NoiseStrength is >= 0 and <= 1, $"--noise-strength must be in [0, 1], got {NoiseStrength}");
        Check($"--noise-strength {NoiseStrength.ToString(CultureInfo.InvariantCulture)}", OptionRules.DenoisingSteps(NoiseStrength, NumInferenceSteps));
        Require(InpaintBatch >= 0, $"--inpaint-batch must be >= 0, got {InpaintBatch}");
        ParseScales(Scales);
        _ = Windows;
        foreach (string mode in CliSupport.SplitList(Modes))
            Require(mode is "naive" or "batched", $"--modes: unknown mode '{mode}' (naive, batched)");
        foreach (string d in CliSupport.SplitList(Dtype))
        {
            Require(Enum.TryParse<ModelDtype>(d, true, out var t) && t is ModelDtype.F32 or ModelDtype.F16 or ModelDtype.BF16, $"--dtype: '{d}' is not F32, F16 or BF16");
            Require(!(t == ModelDtype.F16 && Device == "cpu"), "--dtype F16 is not supported on the CPU (libtorch has no half-precision LayerNorm there); use F32 or BF16");
        }
    }
}

/// <summary>
/// The paper's inference workload on one synthetic image: every mask inpainted (at the inpainting resolution, inside its
/// window) and its distance map computed at the analysis resolution. Per window context and mode: ms per image (median and
/// minimum over --images), peak memory, the UNet's GFLOP per image counted from the architecture, and the achieved GFLOP/s
/// as a fraction of the GEMM peak measured in the same process on the same device and dtype.
/// </summary>
public static class BenchCommand
{
    public static int Run(BenchVerb o, TextWriter output)
    {
        if (o.PrototypeBank) return RunPrototypes(o, output);
        if (o.WriteSingleFile is not null) return WriteSingleFile(o, output);
        if (o.LoadOnly) return RunLoad(o, output);
        var scales = EngineFlags.ParseScales(o.Scales);
        bool compact = o.Model == "compact";
        int size = o.ImageSize > 0 ? o.ImageSize : Resolutions.DefaultInpaintSize(compact);
        int analysis = o.AnalysisSize > 0 ? o.AnalysisSize : Resolutions.DefaultAnalysisSize(compact);
        string? resnet = ScoringOptions.DefaultResNet18Path();
        foreach (string dtypeName in CliSupport.SplitList(o.Dtype))
        {
            var dtype = Enum.Parse<ModelDtype>(dtypeName, ignoreCase: true);
            using var model = Open(o, dtype);
            if (resnet is not null) model.ConfigureScoring(new ScoringOptions(resnet));
            var tokenizer = new HashPromptTokenizer();
            model.SetCategory("bench", tokenizer.EncodePadded(AnomalySD.Prompts.PromptCatalog.BuiltIn().Get("bottle").All), tokenizer.MaxLength);
            var image = SyntheticImage(analysis, o.Seed);
            var masks = MaskProposals.Grid(analysis, analysis, scales).Select(g => g.Mask).ToList();
            masks.Add(BlobMask(analysis)); // stands in for the prototype-guided mask M^(p)
            int steps = (int)(o.NumInferenceSteps * o.NoiseStrength);
            double unetGflop = model.UnetGflops(size, size) * masks.Count * steps;
            double peak = EngineInfo.GemmPeakGflops(o.Device, dtype);
            var info = model.Info();
            output.WriteLine($"model {info["source"]}, {dtypeName}, device {o.Device}, inpainting {size}x{size}, analysis {analysis}x{analysis}, {masks.Count} masks, " +
                             $"{o.NumInferenceSteps} steps x λ {o.NoiseStrength} = {steps} denoising steps per mask, UNet {info["parameters"]!["unet"]} parameters, " +
                             $"{EngineInfo.Query().NumThreads} CPU threads" + (resnet is null ? " (no ResNet18 found: inpainting only, no distances)" : " (inpainting + distance maps)"));
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"UNet work: {model.UnetGflops(size, size):F3} GFLOP per forward, {unetGflop:F1} GFLOP per image; GEMM peak measured now: {peak:F1} GFLOP/s ({dtypeName}, 2048x2048)"));
            // Warm-up (allocator, oneDNN kernels) outside the timings.
            Workload(model, image, masks.Take(2).ToList(), new InpaintOptions(o.NumInferenceSteps, o.NoiseStrength, 2, o.Seed, InpaintSize: size), resnet is not null);
            EngineInfo.TryResetPeakMemory(o.Device);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"memory after the warm-up (model and buffers; the peak MB below includes it): {EngineInfo.TryPeakMemory(o.Device) / 1048576.0:F0} MB"));
            output.WriteLine("| window | mode | batch | ms per image (median) | min | peak MB | UNet GFLOP/s | % of GEMM peak |");
            output.WriteLine("|---|---|---|---|---|---|---|---|");
            foreach (var window in o.Windows)
            {
                var rows = new Dictionary<string, double>();
                foreach (string mode in CliSupport.SplitList(o.Modes))
                {
                    bool naive = mode == "naive";
                    var options = new InpaintOptions(o.NumInferenceSteps, o.NoiseStrength, naive ? 1 : o.InpaintBatch, o.Seed, naive, window.ForEngine, size);
                    EngineInfo.TryResetPeakMemory(o.Device);
                    var times = new List<double>();
                    for (int i = 0; i < o.Images; i++)
                    {
                        var watch = Stopwatch.StartNew();
                        Workload(model, image, masks, options, resnet is not null);
                        times.Add(watch.Elapsed.TotalMilliseconds);
                    }
                    times.Sort();
                    double median = times[times.Count / 2], peakMb = EngineInfo.TryPeakMemory(o.Device) / 1048576.0, achieved = unetGflop / (median / 1000);
                    int batch = naive ? 1 : o.InpaintBatch > 0 ? o.InpaintBatch : model.AutoBatchSize(size, size, masks.Count);
                    rows[mode] = median;
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {window} | {mode} | {batch} | {median:F0} | {times[0]:F0} | {(peakMb > 0 ? peakMb.ToString("F0", CultureInfo.InvariantCulture) : "n/a")} | {achieved:F1} | {100 * achieved / peak:F1} % |"));
                }
                if (rows.TryGetValue("naive", out double n) && rows.TryGetValue("batched", out double b))
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"speedup ({window}): {n / b:F2}x"));
            }
        }
        return 0;
    }

    private static void Workload(InpaintingModel model, RgbImage image, IReadOnlyList<BinaryMask> masks, InpaintOptions options, bool distances)
    {
        if (distances) model.InpaintDistances("bench", image, masks, options);
        else model.Inpaint("bench", image, masks, options);
    }

    /// <summary>eq. 13-14 costs: building a 4-shot bank (x 4 rotations) and one error map, with peak memory.</summary>
    private static InpaintingModel Open(BenchVerb o, ModelDtype dtype) =>
        o.Model is "compact" or "sd2-inpainting" ? InpaintingModel.CreatePreset(o.Model, o.Seed, o.Device, dtype)
        : SingleFileCheckpoint.IsSingleFile(o.Model) ? InpaintingModel.LoadSingleFile(o.Model, new SingleFileOptions(o.ModelConfig), o.Device, dtype)
        : CheckpointLoader.LoadModel(o.Model, o.Device, dtype);

    /// <summary>One load of --model: wall time and the process's peak resident set (Linux VmHWM, reset just before), against the
    /// size on disk (a file, or a folder's weights).</summary>
    private static int RunLoad(BenchVerb o, TextWriter output)
    {
        var dtype = Enum.Parse<ModelDtype>(CliSupport.SplitList(o.Dtype)[0], ignoreCase: true);
        long onDisk = File.Exists(o.Model) ? new FileInfo(o.Model).Length
            : Directory.Exists(o.Model) ? Directory.EnumerateFiles(o.Model, "*.safetensors", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;
        long before = Environment.WorkingSet;
        EngineInfo.TryResetPeakMemory("cpu");
        var watch = Stopwatch.StartNew();
        using var model = Open(o, dtype);
        double seconds = watch.Elapsed.TotalSeconds;
        long peak = EngineInfo.TryPeakMemory("cpu");
        var info = model.Info();
        string detected = info["single_file"]?["description"]?.GetValue<string>() ?? "diffusers folder";
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"load {o.Model} ({detected}) as {dtype}: {seconds:F2} s, peak RSS {peak / 1048576.0:F0} MiB (RSS before the load {before / 1048576.0:F0} MiB), " +
            $"weights on disk {onDisk / 1048576.0:F0} MiB, peak / on disk {(onDisk > 0 ? (double)peak / onDisk : 0):F3}"));
        return 0;
    }

    private static int WriteSingleFile(BenchVerb o, TextWriter output)
    {
        if (o.Model is not ("compact" or "sd2-inpainting")) throw new ArgumentException("--write-single-file writes a preset: --model compact or sd2-inpainting");
        var dtype = Enum.Parse<ModelDtype>(CliSupport.SplitList(o.Dtype)[0], ignoreCase: true);
        var watch = Stopwatch.StartNew();
        using (var model = InpaintingModel.CreatePreset(o.Model, o.Seed, o.Device, dtype))
            model.SaveSingleFile(o.WriteSingleFile!, o.Model == "sd2-inpainting" ? 2 : 1);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {o.WriteSingleFile} ({o.Model}, random weights, {dtype}, {new FileInfo(o.WriteSingleFile!).Length / 1048576.0:F0} MiB) in {watch.Elapsed.TotalSeconds:F1} s"));
        return 0;
    }

    private static int RunPrototypes(BenchVerb o, TextWriter output)
    {
        int size = o.AnalysisSize > 0 ? o.AnalysisSize : 512;
        using var model = InpaintingModel.CreateCompact(o.Seed, o.Device);
        Fitting.ConfigureScoring(model, new ScoringBackbones());
        var shots = Enumerable.Range(0, 4).Select(i => SyntheticImage(size, o.Seed + (ulong)i)).ToList();
        EngineInfo.TryResetPeakMemory(o.Device);
        long baseline = EngineInfo.TryPeakMemory(o.Device);
        var watch = Stopwatch.StartNew();
        model.AddPrototypes("bench", shots);
        double buildMs = watch.Elapsed.TotalMilliseconds;
        long buildPeak = EngineInfo.TryPeakMemory(o.Device);
        EngineInfo.TryResetPeakMemory(o.Device);
        watch.Restart();
        var map = model.ErrorMap("bench", SyntheticImage(size, o.Seed + 99));
        double mapMs = watch.Elapsed.TotalMilliseconds;
        long mapPeak = EngineInfo.TryPeakMemory(o.Device);
        output.WriteLine($"prototype bank: 4 shots x 4 rotations at {size}x{size} = {model.PrototypeRows("bench")} prototypes of 384 channels; error map {map.Height}x{map.Width}");
        output.WriteLine("| step | ms | process peak MB |");
        output.WriteLine("|---|---|---|");
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| build bank | {buildMs:F0} | {buildPeak / 1048576.0:F0} |"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| one error map | {mapMs:F0} | {mapPeak / 1048576.0:F0} |"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"(process peak before the bank: {baseline / 1048576.0:F0} MB)"));
        // What dynamic batching buys the E-only path: error maps of a batch in one engine call (the backbone runs once on it).
        output.WriteLine();
        output.WriteLine("| error maps per engine call | ms per image (min / median of 3) |");
        output.WriteLine("|---|---|");
        foreach (int batch in new[] { 1, 4, 16 })
        {
            var images = Enumerable.Range(0, batch).Select(i => SyntheticImage(size, o.Seed + 200 + (ulong)i)).ToList();
            model.ErrorMaps("bench", images); // warm-up at this batch size
            var times = Enumerable.Range(0, 3).Select(_ =>
            {
                var w = Stopwatch.StartNew();
                model.ErrorMaps("bench", images);
                return w.Elapsed.TotalMilliseconds / batch;
            }).Order().ToList();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {batch} | {times[0]:F1} / {times[1]:F1} |"));
        }
        return 0;
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
