using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using AnomalySD.Calibration;
using AnomalySD.Checkpoints;
using AnomalySD.Data;
using AnomalySD.Detection;
using AnomalySD.Engine;
using AnomalySD.IO;
using AnomalySD.Prompts;
using AnomalySD.Text;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Training;

/// <summary>Options of <see cref="Fitting.Fit"/>. Defaults are the paper's where it has one (section 5.1).</summary>
/// <param name="Model">"compact" (trained from scratch), a diffusers SD inpainting folder or a single-file checkpoint (.safetensors / .ckpt).</param>
/// <param name="Shots">K normal images per category, 0..; 0 = no fine-tuning, no prototype bank.</param>
/// <param name="ShotSeed">null: the first K in sorted order; else a seeded random choice.</param>
/// <param name="ImageSize">Inpainting resolution P in pixels (0 = 64 for compact, 512 for SD); a multiple of 32.</param>
/// <param name="UnetSteps">UNet fine-tuning steps (eq. 8).</param>
/// <param name="DecoderSteps">Decoder fine-tuning steps (eq. 9-10; SD models).</param>
/// <param name="AutoencoderSteps">Autoencoder steps from scratch (compact only).</param>
/// <param name="MixedPrecision">Autocast precision of the training forward passes (Bf16: CPU or CUDA; Fp16: CUDA); weights stay F32.</param>
/// <param name="AnalysisSize">Analysis resolution A (0 = 256 compact, 512 SD; a multiple of 32): shots, foregrounds and the
/// prototype banks live there, and training windows are cut from it (<see cref="Resolutions"/>).</param>
/// <param name="WindowContext">Inpainting window context (null = <see cref="Resolutions.DefaultWindowContext"/>).</param>
/// <param name="EvalSize">Evaluation resolution recorded as the checkpoint's default (null = 256; 0 = original size).</param>
/// <param name="FeatureAggregation">PatchCore local aggregation of prototype features (null = the default; 1 = off, odd k).</param>
/// <param name="Calibration">Calibration from the shots at fit time (λ, fusion weights, thresholds per category); null = off, the
/// paper's fixed values.</param>
/// <param name="ModelConfig">Single files only: a diffusers-layout config folder (<see cref="SingleFileOptions.ModelConfig"/>).</param>
/// <param name="PredictionType">Single files only: epsilon (default), v_prediction or sample.</param>
/// <param name="Tokenizer">Single files only: the CLIP tokenizer folder (<see cref="SingleFileCheckpoint.ResolveTokenizer"/>).</param>
public sealed record FitOptions(
    string Model = "compact", int Shots = 1, int? ShotSeed = null, int ImageSize = 0, int UnetSteps = 300, int DecoderSteps = 100,
    int AutoencoderSteps = 300, int BatchSize = 8, double LearningRate = 1e-4, ulong Seed = 0, string Device = "cpu",
    ModelDtype Dtype = ModelDtype.F32, DistanceKind Distance = DistanceKind.Resnet18Uniform, string? AlexNetPath = null,
    string? LpipsPath = null, string? ResNet18Path = null, string? PromptsPath = null, string? ForegroundMasksDir = null,
    MixedPrecisionMode MixedPrecision = MixedPrecisionMode.No, int AnalysisSize = 0, WindowContext? WindowContext = null, int? EvalSize = null,
    int? FeatureAggregation = null, CalibrationOptions? Calibration = null, DistanceResolution? DistanceResolution = null,
    string? ModelConfig = null, string? PredictionType = null, string? Tokenizer = null)
{
    public bool IsSingleFile => !IsCompact && SingleFileCheckpoint.IsSingleFile(Model);
    public DistanceResolution ResolvedDistanceResolution => DistanceResolution ?? Resolutions.DefaultDistanceResolution;
    public bool IsCompact => string.Equals(Model, "compact", StringComparison.OrdinalIgnoreCase);
    public int ResolvedImageSize => ImageSize > 0 ? ImageSize : Resolutions.DefaultInpaintSize(IsCompact);
    public int ResolvedAnalysisSize => AnalysisSize > 0 ? AnalysisSize : Resolutions.DefaultAnalysisSize(IsCompact);
    public WindowContext ResolvedWindowContext => WindowContext ?? Resolutions.DefaultWindowContext;
    public int ResolvedEvalSize => EvalSize ?? Resolutions.DefaultEvalSize;
    public int ResolvedFeatureAggregation => FeatureAggregation ?? Resolutions.DefaultFeatureAggregation;

    /// <exception cref="ArgumentException">a size or option out of range, naming it.</exception>
    public void Validate()
    {
        if (ResolvedImageSize % 32 != 0) throw new ArgumentException($"image size {ResolvedImageSize} must be a multiple of 32");
        if (ResolvedAnalysisSize % 32 != 0 || ResolvedAnalysisSize < 64) throw new ArgumentException($"analysis size {ResolvedAnalysisSize} must be a multiple of 32, at least 64");
        if (ResolvedEvalSize < 0) throw new ArgumentException($"eval size {ResolvedEvalSize} must be >= 0 (0 = original size)");
        if (ResolvedFeatureAggregation < 1 || ResolvedFeatureAggregation % 2 == 0)
            throw new ArgumentException($"feature aggregation {ResolvedFeatureAggregation} must be odd and >= 1 (1 = off, 3 = PatchCore)");
        Calibration?.Validate();
        if (!IsSingleFile && (ModelConfig ?? PredictionType ?? Tokenizer) is not null)
            throw new ArgumentException($"--model-config, --prediction-type and --tokenizer apply to single-file checkpoints; '{Model}' is not a file");
        if (PredictionType is not null && !SingleFileOptions.PredictionTypes.Contains(PredictionType))
            throw new ArgumentException($"--prediction-type '{PredictionType}' must be one of {string.Join(", ", SingleFileOptions.PredictionTypes)}");
        if (ModelConfig is not null && !Directory.Exists(ModelConfig))
            throw new ArgumentException($"--model-config '{ModelConfig}' is not a folder");
    }
}

/// <summary>Fits one AnomalySD model for all categories (paper section 4.1) and prepares it for scoring.</summary>
public static class Fitting
{
    private static readonly JsonSerializerOptions FitOptionsJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };


    /// <summary>The tokenizer of a model source: <paramref name="tokenizerDir"/> when given (a single file's, with its pad token), else the
    /// folder's CLIP tokenizer, or the hash tokenizer of the compact preset.</summary>
    public static IPromptTokenizer TokenizerFor(string modelSource, string kind, string? tokenizerDir = null, string? padToken = null) =>
        kind != "clip" ? new HashPromptTokenizer()
        : tokenizerDir is not null ? new ClipPromptTokenizer(ClipTokenizer.FromFolder(tokenizerDir, padToken))
        : Directory.Exists(Path.Combine(modelSource, "tokenizer")) ? new ClipPromptTokenizer(ClipTokenizer.FromFolder(Path.Combine(modelSource, "tokenizer")))
        : new HashPromptTokenizer();

    /// <summary>Loads the model of <paramref name="o"/>: the compact preset, a diffusers folder or a single file (what was detected is logged).</summary>
    private static InpaintingModel LoadModel(FitOptions o, ILogger log)
    {
        var dtype = o.Dtype;
        if (o.IsCompact) return InpaintingModel.CreateCompact(o.Seed, o.Device);
        if (!o.IsSingleFile) return CheckpointLoader.LoadModel(o.Model, o.Device, dtype);
        var model = InpaintingModel.LoadSingleFile(o.Model, new SingleFileOptions(o.ModelConfig, o.PredictionType), o.Device, dtype);
        log.LogInformation("{Model}: {Detected}", o.Model, model.Info()["single_file"]?["description"]?.GetValue<string>());
        return model;
    }

    /// <summary>
    /// Loads the shots, fine-tunes (autoencoder from scratch for compact, then UNet, then decoder for SD models),
    /// sets every category's condition, builds the prototype banks and returns the model with its metadata.
    /// </summary>
    public static (InpaintingModel Model, CheckpointMetadata Metadata) Fit(IDataset dataset, IReadOnlyList<string> categories, FitOptions o,
                                                                           ILogger log, Action<string, int, int>? progress = null)
    {
        o.Validate();
        var catalog = o.PromptsPath is null ? PromptCatalog.BuiltIn() : PromptCatalog.Load(o.PromptsPath);
        int size = o.ResolvedAnalysisSize; // shots, foregrounds and banks live at the analysis resolution
        var window = o.ResolvedWindowContext;
        // A single file carries no tokenizer: found before the model is loaded, so a missing one fails fast.
        string? tokenizerDir = o.IsSingleFile ? SingleFileCheckpoint.ResolveTokenizer(o.Model, o.Tokenizer, o.ModelConfig) : null;
        var model = LoadModel(o, log);
        try
        {
            string tokenizerKind = o.IsCompact ? "hash" : "clip";
            string? padToken = o.IsSingleFile ? model.Info()["single_file"]?["tokenizer_pad_token"]?.GetValue<string>() : null;
            var tokenizer = TokenizerFor(o.Model, tokenizerKind, tokenizerDir, padToken);
            var prompts = new List<CategoryPrompts>();
            var shotPaths = new Dictionary<string, IReadOnlyList<string>>();
            var shotImages = new Dictionary<string, List<RgbImage>>();
            var foregrounds = new Dictionary<string, List<BinaryMask>>();
            foreach (string category in categories)
            {
                var p = catalog.Get(category);
                if (p.IsFallback) log.LogWarning("category '{Category}' has no prompts in {Source}; using the generic ones", category, catalog.Source);
                prompts.Add(p);
                var shots = ShotSelection.Select(dataset.Train(category), o.Shots, o.ShotSeed);
                shotPaths[category] = shots.Select(s => s.ImagePath).ToList();
                shotImages[category] = shots.Select(s => ImageIO.LoadRgb(s.ImagePath, size)).ToList();
                foregrounds[category] = shots.Select((s, i) => ForegroundFor(s, shotImages[category][i], p.ObjectType, o.ForegroundMasksDir, size)).ToList();
                log.LogInformation("{Category}: {Shots} shot(s), foreground {Fraction}", category, shots.Count,
                    string.Join(", ", foregrounds[category].Select(m => $"{m.Count / (double)(size * size):P0}")));
            }

            // Scoring backbones first: the decoder loss (eq. 10) uses the same perceptual distance.
            ConfigureScoring(model, new ScoringBackbones(o.ResNet18Path, o.Distance, o.AlexNetPath, o.LpipsPath), o.ResolvedFeatureAggregation);
            if (o.Shots > 0)
            {
                // Training windows: what inference will inpaint, resampled to the inpainting resolution.
                var options = new TrainerOptions(o.BatchSize, 1, o.LearningRate, o.Seed, MixedPrecision: o.MixedPrecision,
                                                 WindowContext: window.ForEngine, InpaintSize: o.ResolvedImageSize);
                if (o.IsCompact)
                    Train(model, TrainerKind.Autoencoder, options with { LearningRate = Math.Max(o.LearningRate, 1e-3) }, o.AutoencoderSteps,
                          categories, shotImages, foregrounds, prompts, tokenizer, log, progress);
                Train(model, TrainerKind.Unet, o.IsCompact ? options with { LearningRate = Math.Max(o.LearningRate, 5e-4) } : options, o.UnetSteps,
                      categories, shotImages, foregrounds, prompts, tokenizer, log, progress);
                if (!o.IsCompact && o.DecoderSteps > 0)
                    Train(model, TrainerKind.Decoder, options, o.DecoderSteps, categories, shotImages, foregrounds, prompts, tokenizer, log, progress);
            }
            else if (o.IsCompact)
            {
                log.LogWarning("--shots 0 with the compact preset: the model is untrained (random weights); use an SD inpainting folder for zero-shot");
            }

            foreach (var p in prompts) model.SetCategory(p.Category, tokenizer.EncodePadded(p.All), tokenizer.MaxLength);
            foreach (string category in categories) model.AddPrototypes(category, shotImages[category]);
            var calibration = new Dictionary<string, CategoryCalibration>();
            if (o.Calibration is { } co && o.Shots > 0)
            {
                var watch = System.Diagnostics.Stopwatch.StartNew();
                var detector = new AnomalyModel(model, new DetectorOptions(MaskStrategy.Full, co.Scales,
                    Inpaint: new InpaintOptions(co.NumInferenceSteps, 0.4, 0, o.Seed, WindowContext: window.ForEngine, InpaintSize: o.ResolvedImageSize,
                                                DistanceAtInpaintSize: o.ResolvedDistanceResolution == DistanceResolution.Inpainting)));
                foreach (var (category, p) in categories.Zip(prompts))
                {
                    // Calibration images come from the shots alone; cut-paste may borrow another category's first shot.
                    var others = categories.Where(c => c != category).Select(c => shotImages[c][0]).ToList();
                    var samples = CalibrationSet.Build(shotImages[category], foregrounds[category], p.ObjectType == ObjectType.Texture || p.RotationInvariant,
                                                       others, co.Normals, co.Defectives, co.Seed + IO.StableHash.Fnv1a31(category));
                    calibration[category] = Calibrator.Calibrate(detector, category, samples, co, log, p.NoiseStrength);
                    log.LogInformation("{Category}: calibrated {Choice} ({Seconds:F0} s so far)", category, calibration[category], watch.Elapsed.TotalSeconds);
                    progress?.Invoke("calibrate", calibration.Count, categories.Count);
                }
            }
            var metadata = new CheckpointMetadata(o.ResolvedImageSize, o.IsCompact ? "compact" : Path.GetFullPath(o.Model), o.Shots,
                o.Distance == DistanceKind.LpipsAlex ? "lpips_alex" : "resnet18_uniform", prompts, shotPaths, tokenizerKind)
            {
                FitOptions = JsonSerializer.SerializeToNode(o, FitOptionsJson) as JsonObject,
                TokenizerDir = tokenizerDir,
                PadToken = padToken,
                AnalysisSize = size,
                EvalSize = o.ResolvedEvalSize,
                WindowContext = window,
                FeatureAggregation = o.ResolvedFeatureAggregation,
                DistanceResolution = o.ResolvedDistanceResolution,
                Calibration = calibration,
            };
            return (model, metadata);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Configures the scoring backbones, finding the build's ResNet18 when no path is given.</summary>
    /// <exception cref="FileNotFoundException">no ResNet18 weights were found.</exception>
    public static void ConfigureScoring(InpaintingModel model, ScoringBackbones backbones, int featureAggregation = 1)
    {
        string path = backbones.ResNet18Path ?? ScoringOptions.DefaultResNet18Path()
            ?? throw new FileNotFoundException("ResNet18 weights (resnet18_imagenet.safetensors) not found: run ./build.sh, or pass --resnet18 / set ANOMALYSD_RESNET18");
        model.ConfigureScoring(new ScoringOptions(path, backbones.Distance, backbones.AlexNetPath, backbones.LpipsPath, FeatureAggregation: featureAggregation));
    }

    private static BinaryMask ForegroundFor(Sample s, RgbImage image, ObjectType type, string? userMasks, int size)
    {
        if (userMasks is not null)
        {
            string? user = DatasetFiles.MasksByStem(Path.Combine(userMasks, s.Category)).GetValueOrDefault(s.Stem)
                           ?? DatasetFiles.MasksByStem(userMasks).GetValueOrDefault(s.Stem);
            if (user is not null) return ImageIO.LoadMask(user, size);
        }
        return type == ObjectType.Texture ? ForegroundMask.Full(size, size) : ForegroundMask.Compute(image);
    }

    private static void Train(InpaintingModel model, TrainerKind kind, TrainerOptions options, int steps, IReadOnlyList<string> categories,
                              Dictionary<string, List<RgbImage>> images, Dictionary<string, List<BinaryMask>> foregrounds,
                              List<CategoryPrompts> prompts, IPromptTokenizer tokenizer, ILogger log, Action<string, int, int>? progress)
    {
        if (steps <= 0) return;
        using var trainer = ModelTrainer.Create(model, kind, options);
        foreach (var (category, p) in categories.Zip(prompts))
            trainer.AddCategory(category, images[category], foregrounds[category], tokenizer.EncodePadded(p.All), tokenizer.MaxLength);
        const int chunk = 10;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        for (int done = 0; done < steps;)
        {
            int n = Math.Min(chunk, steps - done);
            double loss = trainer.Run(n);
            done += n;
            progress?.Invoke($"fit {kind.ToString().ToLowerInvariant()}", done, steps);
            if (done == steps || done % 50 == 0)
                log.LogInformation("{Kind} step {Done}/{Steps}: loss {Loss:F5} ({Seconds:F0} s)", kind, done, steps, loss, watch.Elapsed.TotalSeconds);
        }
    }
}
