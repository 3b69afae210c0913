using AnomalySD.Engine;
using AnomalySD.IO;
using AnomalySD.Calibration;
using AnomalySD.Detection;
using AnomalySD.Evaluation;
using AnomalySD.Training;
using CommandLine;

namespace AnomalySD.Cli;

/// <summary>Flags of every verb that runs the engine. <see cref="Validate"/> checks every value before any work starts.</summary>
public abstract class EngineFlags
{
    [Option("seed", Default = 0UL, HelpText = "Seed of every random choice (training batches, masks, inpainting noise).")]
    public ulong Seed { get; set; } = 0UL;

    [Option("device", Default = "cpu", HelpText = "cpu, cuda or cuda:N; eval also takes a list (cuda:0,cuda:1, cuda:all, or cpu,cpu): one engine per device, one queue of images.")]
    public string Device { get; set; } = "cpu";

    /// <summary>The devices of --device: a comma-separated list, "cuda:all" expanding to every CUDA device.</summary>
    public IReadOnlyList<string> Devices()
    {
        var list = new List<string>();
        foreach (string d in CliSupport.SplitList(Device))
        {
            if (d == "cuda:all")
            {
                var cuda = AnomalySD.Engine.EngineInfo.Query().CudaDevices;
                if (cuda.Count == 0) throw new ArgumentException("--device cuda:all: no CUDA device is available");
                list.AddRange(Enumerable.Range(0, cuda.Count).Select(i => $"cuda:{i}"));
            }
            else list.Add(d);
        }
        return list;
    }

    /// <summary>Verbs that run one engine refuse a device list.</summary>
    protected void RequireOneDevice(string verb) =>
        Require(CliSupport.SplitList(Device).Count == 1 && Device != "cuda:all", $"--device '{Device}': {verb} runs one engine; give one device (cpu, cuda or cuda:N)");

    [Option("config", HelpText = "JSON options file: keys are the long flag names (e.g. {\"shots\": 1}); flags on the command line win.")]
    public string? Config { get; set; }

    [Option("threads", HelpText = "CPU threads for libtorch (default: all hardware threads).")]
    public int? Threads { get; set; }

    [Option("verbose", HelpText = "Debug logging (and stack traces of internal errors).")]
    public bool Verbose { get; set; }

    /// <summary>Checks the flags' values; throws ArgumentException naming the flag. Runs before any work.</summary>
    public virtual void Validate()
    {
        Require(Threads is null or >= 1, $"--threads must be >= 1, got {Threads}");
        var devices = CliSupport.SplitList(Device);
        Require(devices.Count >= 1, "--device is empty");
        foreach (string d in devices)
            Require(d == "cpu" || d == "cuda" || d == "cuda:all" || System.Text.RegularExpressions.Regex.IsMatch(d, @"^cuda:\d{1,4}$"),
                    $"--device '{d}' must be cpu, cuda, cuda:N or cuda:all");
    }

    protected static void Require(bool condition, string message)
    {
        if (!condition) throw new ArgumentException(message);
    }

    /// <summary>Throws "<paramref name="flag"/> <paramref name="problem"/>" when a rule (<see cref="OptionRules"/>) found one.</summary>
    protected static void Check(string flag, string? problem)
    {
        if (problem is not null) throw new ArgumentException($"{flag} {problem}");
    }

    /// <summary>Parses a comma-separated list of grid scales (positive integers, no repeats).</summary>
    public static IReadOnlyList<int> ParseScales(string text)
    {
        var scales = new List<int>();
        foreach (string item in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(item, out int k) || k < 1)
                throw new ArgumentException($"--scales '{text}': '{item}' is not a positive integer (example: 1,2,4,8)");
            scales.Add(k);
        }
        if (scales.Distinct().Count() != scales.Count) throw new ArgumentException($"--scales '{text}': a scale is repeated");
        return scales;
    }
}

/// <summary>Flags of the verbs that fit or load a model: scoring backbones and the analysis resolution and windows.</summary>
public abstract class ModelFlags : EngineFlags
{
    [Option("resnet18", HelpText = "ResNet18 weights (default: the build's resnet18_imagenet.safetensors).")]
    public string? ResNet18 { get; set; }

    [Option("alexnet", HelpText = "torchvision AlexNet weights (safetensors) for the LPIPS-AlexNet distance.")]
    public string? AlexNet { get; set; }

    [Option("lpips", HelpText = "LPIPS v0.1 linear weights (safetensors), e.g. alex_v0.1.safetensors.")]
    public string? Lpips { get; set; }

    [Option("analysis-size", HelpText = "Analysis resolution: where the prototype error map, the distances and the anomaly map are computed (default 256 compact, 512 SD; with a checkpoint: its own).")]
    public int? AnalysisSize { get; set; }

    [Option("window-context", HelpText = "Inpainting windows: context margin per side as a fraction of the mask's box side (e.g. 0.5), or 'full' (the whole image, the paper's). Default: full; with a checkpoint: its own.")]
    public string? WindowContext { get; set; }

    [Option("distance-resolution", HelpText = "Where D of a window is computed: Analysis (the window's own size) or Inpainting (both sides at the inpainting resolution, then resampled). Default: Analysis; with a checkpoint: its own.")]
    public DistanceResolution? DistanceResolution { get; set; }

    [Option("calibrate", Default = "on", HelpText = "on: calibrate λ, the fusion weights and the thresholds from the shots at fit time, and score with them; off: the paper's fixed values (λ from the prompt file, α = 0.1).")]
    public string Calibrate { get; set; } = "on";

    public WindowContext? ParsedWindowContext => WindowContext is null ? null : Detection.WindowContext.Parse(WindowContext);

    public bool CalibrateOn => Calibrate.Equals("on", StringComparison.OrdinalIgnoreCase);

    public override void Validate()
    {
        base.Validate();
        Check("--analysis-size", AnalysisSize is int a ? OptionRules.AnalysisSize(a) : null);
        _ = ParsedWindowContext;
        Require(Calibrate.Equals("on", StringComparison.OrdinalIgnoreCase) || Calibrate.Equals("off", StringComparison.OrdinalIgnoreCase),
                $"--calibrate must be on or off, got '{Calibrate}'");
    }

    public ScoringBackbones Backbones(DistanceKind distance = DistanceKind.Resnet18Uniform) => new(ResNet18, distance, AlexNet, Lpips);
}

/// <summary>Flags of scoring (eval, detect). Unset flags take the checkpoint's or the paper's values.</summary>
public abstract class ScoringFlags : ModelFlags
{
    [Option("masks", HelpText = "Full (multi-scale + prototype, default), MultiScale, or Prototype (E only, PatchCore-like baseline).")]
    public MaskStrategy? Masks { get; set; }

    [Option("scales", HelpText = "Grid scales k (default 1,2,4,8).")]
    public string? Scales { get; set; }

    [Option("num-inference-steps", HelpText = "DDIM schedule length (default 50).")]
    public int? NumInferenceSteps { get; set; }

    [Option("noise-strength", HelpText = "λ for every category (default: each category's value from the prompt file).")]
    public double? NoiseStrength { get; set; }

    [Option("inpaint-batch", HelpText = "Masks per UNet batch (default 0: from available memory).")]
    public int? InpaintBatch { get; set; }

    [Option("bank-views", HelpText = "Views of each shot in the prototype bank: none, rot4 (0/90/180/270 degrees, the default) or dihedral8 (the 4 rotations of the shot and of its mirror image). Other views than the checkpoint's rebuild its banks from its recorded shots.")]
    public string? BankViews { get; set; }

    [Option("matching", HelpText = "Nearest-neighbour search of the error map E: global (default) or local:R (each test patch compared only with bank patches within R grid cells of its own position, Chebyshev distance, in each view's frame; 1 cell = 8 px).")]
    public string? Matching { get; set; }

    [Option("image-score", HelpText = "Image score of the smoothed map: max (default) or topk (the mean of its top 1 % of pixels; topk:F for another share F in (0, 1]).")]
    public string? ImageScore { get; set; }

    [Option("transductive", HelpText = "off (default); on: each image is also scored against the other images of its set (MuSc-style mutual scoring) and that map fused with the shot-bank map E; mutual: the mutual map alone (zero-shot). The set: a category's test split (eval), all inputs of the run (detect). Scores are raw.")]
    public string? Transductive { get; set; }

    [Option("transductive-refs", HelpText = "Transductive scoring: each image is compared with at most K other images of its set (a seeded symmetric subset; default 32, i.e. all the others in sets of up to 33).")]
    public int? TransductiveRefs { get; set; }

    [Option("shard", HelpText = "Score only shard I/N (by a stable hash of each image's path): eval writes that shard's scores and maps for merge (needs --checkpoint), detect scores that part of its inputs. Default from JOB_COMPLETION_INDEX (with --shard-count) or SLURM_ARRAY_TASK_ID/COUNT.")]
    public string? Shard { get; set; }

    [Option("shard-count", HelpText = "N of --shard when the index comes from JOB_COMPLETION_INDEX (the Indexed Job's completions).")]
    public int? ShardCount { get; set; }

    /// <summary>--shard, or the scheduler's environment; null when neither says.</summary>
    public ShardSpec? ResolvedShard() => Shard is not null ? ShardSpec.Parse(Shard) : ShardSpec.FromEnvironment(ShardCount, Environment.GetEnvironmentVariable);

    /// <summary>The scoring flags given on the command line, by name (a fit rejects them).</summary>
    protected IEnumerable<string> GivenScoringFlags()
    {
        if (Shard is not null) yield return "--shard";
        if (Masks is not null) yield return "--masks";
        if (Scales is not null) yield return "--scales";
        if (NumInferenceSteps is not null) yield return "--num-inference-steps";
        if (NoiseStrength is not null) yield return "--noise-strength";
        if (InpaintBatch is not null) yield return "--inpaint-batch";
        if (BankViews is not null) yield return "--bank-views";
        if (Matching is not null) yield return "--matching";
        if (ImageScore is not null) yield return "--image-score";
        if (Transductive is not null) yield return "--transductive";
        if (TransductiveRefs is not null) yield return "--transductive-refs";
    }

    /// <summary>--transductive as the library's mode.</summary>
    public TransductiveMode TransductiveMode => Transductive?.Trim().ToLowerInvariant() switch
    {
        null or "off" => Detection.TransductiveMode.Off,
        "on" => Detection.TransductiveMode.On,
        "mutual" => Detection.TransductiveMode.Mutual,
        _ => throw new ArgumentException($"--transductive must be on, off or mutual, got '{Transductive}'"),
    };

    /// <summary>Parses a flag's value with the library's parser, naming the flag in the error.</summary>
    private static T? Parsed<T>(string flag, string? value, Func<string, T> parse) where T : class
    {
        if (value is null) return null;
        try { return parse(value); }
        catch (ArgumentException e) { throw new ArgumentException($"--{flag}: {e.Message}"); }
    }

    public override void Validate()
    {
        base.Validate();
        if (Scales is not null) ParseScales(Scales);
        int steps = NumInferenceSteps ?? 50;
        Check("--num-inference-steps", OptionRules.NumInferenceSteps(steps));
        if (NoiseStrength is double lambda)
        {
            Check("--noise-strength", OptionRules.NoiseStrength(lambda));
            Check($"--noise-strength {lambda.ToString(System.Globalization.CultureInfo.InvariantCulture)}", OptionRules.DenoisingSteps(lambda, steps));
        }
        Require(InpaintBatch is null or >= 0, $"--inpaint-batch must be >= 0, got {InpaintBatch}");
        Require(ShardCount is null or >= 1, $"--shard-count must be >= 1, got {ShardCount}");
        var shard = ResolvedShard();
        // A count without an index would run the whole split as if unsharded: refused, not run silently.
        Require(ShardCount is null || shard is not null,
                $"--shard-count {ShardCount} needs this process's shard index: give --shard I/N, or run it as a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) or a Slurm array task");
        Require(ShardCount is null || Shard is null || shard?.Count == ShardCount, $"--shard {Shard} and --shard-count {ShardCount} disagree on the number of shards");
        _ = ToRequest();
        Require(TransductiveRefs is null or >= 2, $"--transductive-refs must be >= 2, got {TransductiveRefs}");
        // One phase only: a shard sees part of the set that each image is compared with.
        Require(shard is null || TransductiveMode == Detection.TransductiveMode.Off,
                $"--transductive {Transductive} compares each image with the others of its set, and shard {shard} sees only part of it: run it unsharded (eval: one process per category, e.g. --categories X)");
    }

    /// <summary>The detector's devices, backbones and scoring request.</summary>
    public DetectorSettings DetectorSettings(int? evalSize = null) => new(Devices(), Backbones(), ToRequest(evalSize));

    /// <summary>The library's scoring request, by name.</summary>
    public ScoringRequest ToRequest(int? evalSize = null) => new(
        Masks: Masks ?? MaskStrategy.Full, Scales: Scales is null ? null : ParseScales(Scales), NumInferenceSteps: NumInferenceSteps ?? 50,
        NoiseStrength: NoiseStrength, InpaintBatch: InpaintBatch ?? 0, Seed: Seed, AnalysisSize: AnalysisSize, WindowContext: ParsedWindowContext,
        EvalSize: evalSize, Calibrate: CalibrateOn, DistanceResolution: DistanceResolution,
        BankViews: Parsed("bank-views", BankViews, Engine.BankViews.Parse), Matching: Parsed("matching", Matching, PatchMatching.Parse),
        ImageScore: Parsed("image-score", ImageScore, AnomalySD.Scoring.ImageScoreRule.Parse), Transductive: TransductiveMode, TransductiveRefs: TransductiveRefs);
}

/// <summary>Flags of fitting (also accepted by eval, which fits first when no --checkpoint is given).</summary>
public abstract class FitFlags : ScoringFlags
{
    [Option("data", HelpText = "Dataset folder: MVTec AD layout, VisA (split_csv/1cls.csv) or plain (normal/, abnormal/, masks/).")]
    public string? Data { get; set; }

    [Option("categories", HelpText = "Comma-separated categories (default: all of the dataset).")]
    public string? Categories { get; set; }

    [Option("shots", Default = 1, HelpText = "K normal images per category (0-4 in the paper); 0 = no fine-tuning.")]
    public int Shots { get; set; } = 1;

    [Option("shot-seed", HelpText = "Pick the shots at random with this seed (default: the first K in sorted order).")]
    public int? ShotSeed { get; set; }

    [Option("model", Default = "compact", HelpText = "'compact' (small model trained from scratch), a diffusers SD inpainting folder, or a single-file SD checkpoint (FILE.safetensors or FILE.ckpt, original layout).")]
    public string Model { get; set; } = "compact";

    [Option("model-config", HelpText = "Single files: a diffusers-layout folder whose unet/, vae/, text_encoder/ hold config.json (weights there ignored), for files that are not a standard SD model.")]
    public string? ModelConfig { get; set; }

    [Option("prediction-type", HelpText = "Single files: what the UNet predicts: epsilon (default, SD inpainting), v_prediction or sample.")]
    public string? PredictionType { get; set; }

    [Option("tokenizer", HelpText = "Single files: a folder with the CLIP tokenizer files (vocab.json, merges.txt); default: <model-config>/tokenizer, tokenizer/ beside the file, $ANOMALYSD_TOKENIZER, else the bundled CLIP BPE.")]
    public string? Tokenizer { get; set; }

    [Option("image-size", Default = 0, HelpText = "Inpainting resolution: what the model runs at (0: 64 for compact, 512 for SD); a multiple of 32.")]
    public int ImageSize { get; set; } = 0;

    [Option("eval-size", HelpText = "Evaluation resolution: maps meet the ground truth at this size (default 256; 0 = each image's original size).")]
    public int? EvalSize { get; set; }

    [Option("feature-aggregation", HelpText = "PatchCore's local aggregation of prototype features: k x k neighbourhood average (odd k; 1 = off). Default: 1.")]
    public int? FeatureAggregation { get; set; }

    [Option("calibration-size", Default = "3,3", HelpText = "Calibration images per category: normals,defectives (augmented shots; the defectives with synthetic defects).")]
    public string CalibrationSize { get; set; } = "3,3";

    [Option("calibration-lambdas", Default = "0.3,0.4", HelpText = "The λ grid calibration chooses from (a λ above the paper's 0.4 costs more UNet work per mask).")]
    public string CalibrationLambdas { get; set; } = "0.3,0.4";

    [Option("calibration-resamples", Default = Calibrator.DefaultResamples, HelpText = "Bootstrap resamples of calibration's one-standard-error rule (a cheaper weighting within one standard error of the best is taken); 0: the best calibration objective wins.")]
    public int CalibrationResamples { get; set; } = Calibrator.DefaultResamples;

    [Option("unet-steps", Default = 300, HelpText = "UNet fine-tuning steps (eq. 8).")]
    public int UnetSteps { get; set; } = 300;

    [Option("decoder-steps", Default = 100, HelpText = "Decoder fine-tuning steps (eq. 9-10, SD models).")]
    public int DecoderSteps { get; set; } = 100;

    [Option("autoencoder-steps", Default = 300, HelpText = "Autoencoder training steps from scratch (compact only).")]
    public int AutoencoderSteps { get; set; } = 300;

    [Option("batch-size", Default = 8, HelpText = "Training batch size.")]
    public int BatchSize { get; set; } = 8;

    [Option("lr", Default = 1e-4, HelpText = "Adam learning rate (compact raises it to at least 5e-4 for the UNet, 1e-3 for the autoencoder).")]
    public double LearningRate { get; set; } = 1e-4;

    [Option("dtype", Default = ModelDtype.F32, HelpText = "Weights dtype of an SD model: F32, F16, BF16.")]
    public ModelDtype Dtype { get; set; } = ModelDtype.F32;

    [Option("mixed-precision", Default = MixedPrecisionMode.No, HelpText = "Training forward passes in No (fp32), Bf16 (CPU or CUDA) or Fp16 (CUDA, with loss scaling); needs --dtype F32.")]
    public MixedPrecisionMode MixedPrecision { get; set; } = MixedPrecisionMode.No;

    [Option("distance", Default = DistanceKind.Resnet18Uniform, HelpText = "Perceptual distance: LpipsAlex (needs --alexnet, --lpips) or Resnet18Uniform.")]
    public DistanceKind Distance { get; set; } = DistanceKind.Resnet18Uniform;

    [Option("prompts", HelpText = "Prompt file (JSON) replacing the built-in one.")]
    public string? Prompts { get; set; }

    [Option("foreground-masks", HelpText = "Folder of user foreground masks m_f, paired by stem (optionally per category sub-folder).")]
    public string? ForegroundMasks { get; set; }

    public override void Validate()
    {
        base.Validate();
        Check("--shots", OptionRules.Shots(Shots));
        Check("--image-size", ImageSize == 0 ? null : OptionRules.InpaintSize(ImageSize) is string p ? p + " (or 0 for the model's default)" : null);
        Check("--eval-size", EvalSize is int e ? OptionRules.EvalSize(e) : null);
        Check("--feature-aggregation", FeatureAggregation is int k ? OptionRules.FeatureAggregation(k) : null);
        Require(UnetSteps >= 0 && DecoderSteps >= 0 && AutoencoderSteps >= 0, "--unet-steps, --decoder-steps and --autoencoder-steps must be >= 0");
        Require(BatchSize >= 1, $"--batch-size must be >= 1, got {BatchSize}");
        Require(LearningRate > 0, $"--lr must be > 0, got {LearningRate}");
        Require(MixedPrecision == MixedPrecisionMode.No || Dtype == ModelDtype.F32, $"--mixed-precision {MixedPrecision} keeps fp32 master weights: use --dtype F32, not {Dtype}");
        Require(MixedPrecision != MixedPrecisionMode.Fp16 || Device.StartsWith("cuda", StringComparison.Ordinal), "--mixed-precision Fp16 needs --device cuda; use Bf16 on the CPU");
        Require(Distance != DistanceKind.LpipsAlex || (AlexNet is not null && Lpips is not null), "--distance LpipsAlex needs --alexnet and --lpips");
        new FitOptions(Model: Model, ModelConfig: ModelConfig, PredictionType: PredictionType, Tokenizer: Tokenizer).Validate(); // the single-file flags
        CalibrationOptions()?.Validate();
    }

    /// <summary>The calibration of a fit (null with --calibrate off).</summary>
    public CalibrationOptions? CalibrationOptions()
    {
        if (!CalibrateOn) return null;
        var size = CliSupport.SplitList(CalibrationSize);
        Require(size.Count == 2 && int.TryParse(size[0], out _) && int.TryParse(size[1], out _),
                $"--calibration-size '{CalibrationSize}' must be two numbers: normals,defectives (e.g. 3,3)");
        var lambdas = CliSupport.SplitList(CalibrationLambdas).Select(t =>
            double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v)
                ? v : throw new ArgumentException($"--calibration-lambdas '{CalibrationLambdas}': '{t}' is not a number")).ToList();
        try
        {
            var o = new CalibrationOptions(int.Parse(size[0]), int.Parse(size[1]), lambdas, Seed: (int)(Seed % int.MaxValue), Resamples: CalibrationResamples);
            o.Validate();
            return o;
        }
        catch (ArgumentException e) { throw new ArgumentException($"--calibration-size / --calibration-lambdas / --calibration-resamples: {e.Message}"); }
    }

    /// <summary>The library's fit options, by name.</summary>
    public FitOptions ToFitOptions() => new(
        Model: Model, Shots: Shots, ShotSeed: ShotSeed, ImageSize: ImageSize, UnetSteps: UnetSteps, DecoderSteps: DecoderSteps,
        AutoencoderSteps: AutoencoderSteps, BatchSize: BatchSize, LearningRate: LearningRate, Seed: Seed, Device: Device, Dtype: Dtype,
        Distance: Distance, AlexNetPath: AlexNet, LpipsPath: Lpips, ResNet18Path: ResNet18, PromptsPath: Prompts, ForegroundMasksDir: ForegroundMasks,
        MixedPrecision: MixedPrecision, AnalysisSize: AnalysisSize ?? 0, WindowContext: ParsedWindowContext, EvalSize: EvalSize,
        FeatureAggregation: FeatureAggregation, Calibration: CalibrationOptions(), DistanceResolution: DistanceResolution,
        ModelConfig: ModelConfig, PredictionType: PredictionType, Tokenizer: Tokenizer);

    /// <summary>--data is given, and the output folder <paramref name="outDir"/> is neither it, nor inside it, nor around it.</summary>
    protected void RequireDataApartFrom(string outDir)
    {
        Require(Data is not null, "--data is required");
        PathGuard.Separate(outDir, "--out", Data!, "--data");
    }

    /// <summary>
    /// The categories a fit trains on: those named by --categories (each must have a training split), or every category of the
    /// dataset that has one; the others are named in the log, not dropped silently.
    /// </summary>
    /// <exception cref="KeyNotFoundException">a named category the dataset does not have.</exception>
    /// <exception cref="InvalidDataException">a named category without a training split, or none to fit.</exception>
    public static IReadOnlyList<string> FitCategories(string? list, AnomalySD.Data.IDataset dataset, Microsoft.Extensions.Logging.ILogger log)
    {
        if (dataset.IgnoredFolders.Count > 0)
            Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(log, "'{Root}': ignored folder(s) {Folders}: neither train/good nor test/ inside", dataset.Root, string.Join(", ", dataset.IgnoredFolders));
        var selected = SelectCategories(list, dataset);
        var untrainable = selected.Where(c => !dataset.HasTrainSplit(c)).ToList();
        if (untrainable.Count > 0 && list is not null)
            throw new InvalidDataException($"categor{(untrainable.Count > 1 ? "ies" : "y")} {string.Join(", ", untrainable)} of '{dataset.Root}' ha{(untrainable.Count > 1 ? "ve" : "s")} no training split (train/good) to fit on");
        if (untrainable.Count > 0)
            Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(log, "skipped categor{Plural} {Categories}: no training split (train/good) to fit on", untrainable.Count > 1 ? "ies" : "y", string.Join(", ", untrainable));
        var fit = selected.Except(untrainable).ToList();
        return fit.Count > 0 ? fit : throw new InvalidDataException($"'{dataset.Root}' has no category with a training split (train/good) to fit on");
    }

    /// <summary>The categories named by --categories (all of the dataset when absent).</summary>
    /// <exception cref="KeyNotFoundException">a category the dataset does not have.</exception>
    public static IReadOnlyList<string> SelectCategories(string? list, AnomalySD.Data.IDataset dataset)
    {
        var wanted = CliSupport.SplitList(list);
        if (wanted.Count == 0) return dataset.Categories;
        foreach (string c in wanted)
            if (!dataset.Categories.Contains(c))
                throw new KeyNotFoundException($"unknown category '{c}' in '{dataset.Root}' (known: {string.Join(", ", dataset.Categories)})");
        return wanted;
    }
}
