using System.Diagnostics;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Pipeline;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

/// <summary>Flags of fitting (also accepted by eval, which fits first when no --checkpoint is given).</summary>
public abstract class FitFlags : EngineOptions
{
    [Option("data", HelpText = "Dataset folder: MVTec AD layout, VisA (split_csv/1cls.csv) or plain (normal/, abnormal/, masks/).")]
    public string? Data { get; set; }

    [Option("categories", HelpText = "Comma-separated categories (default: all of the dataset).")]
    public string? Categories { get; set; }

    [Option("shots", Default = 1, HelpText = "K normal images per category (0-4 in the paper); 0 = no fine-tuning.")]
    public int Shots { get; set; } = 1;

    [Option("shot-seed", HelpText = "Pick the shots at random with this seed (default: the first K in sorted order).")]
    public int? ShotSeed { get; set; }

    [Option("model", Default = "compact", HelpText = "'compact' (small model trained from scratch) or a diffusers SD inpainting folder.")]
    public string Model { get; set; } = "compact";

    [Option("image-size", Default = 0, HelpText = "Model resolution (0: 64 for compact, 512 for SD; compact at 128 takes ~4x the time); a multiple of 32.")]
    public int ImageSize { get; set; } = 0;

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

    [Option("dtype", Default = AsdDtypeName.F32, HelpText = "Weights dtype of an SD model: F32, F16, BF16.")]
    public AsdDtypeName Dtype { get; set; } = AsdDtypeName.F32;

    [Option("mixed-precision", Default = MixedPrecisionMode.No, HelpText = "Training forward passes in No (fp32), Bf16 (CPU or CUDA) or Fp16 (CUDA, with loss scaling); needs --dtype F32.")]
    public MixedPrecisionMode MixedPrecision { get; set; } = MixedPrecisionMode.No;

    [Option("distance", Default = DistanceKind.Resnet18Uniform, HelpText = "Perceptual distance: LpipsAlex (needs --alexnet, --lpips) or Resnet18Uniform.")]
    public DistanceKind Distance { get; set; } = DistanceKind.Resnet18Uniform;

    [Option("alexnet", HelpText = "torchvision AlexNet weights (safetensors) for LPIPS.")]
    public string? AlexNet { get; set; }

    [Option("lpips", HelpText = "LPIPS v0.1 linear weights (safetensors), e.g. alex_v0.1.safetensors.")]
    public string? Lpips { get; set; }

    [Option("resnet18", HelpText = "ResNet18 weights (default: the build's resnet18_imagenet.safetensors).")]
    public string? ResNet18 { get; set; }

    [Option("prompts", HelpText = "Prompt file (JSON) replacing the built-in one.")]
    public string? Prompts { get; set; }

    [Option("foreground-masks", HelpText = "Folder of user foreground masks m_f, paired by stem (optionally per category sub-folder).")]
    public string? ForegroundMasks { get; set; }

    public override void Validate()
    {
        Require(Shots >= 0, $"--shots must be >= 0, got {Shots}");
        Require(ImageSize >= 0 && ImageSize % 32 == 0, $"--image-size must be a positive multiple of 32 (or 0 for the default), got {ImageSize}");
        Require(UnetSteps >= 0 && DecoderSteps >= 0 && AutoencoderSteps >= 0, "--unet-steps, --decoder-steps and --autoencoder-steps must be >= 0");
        Require(BatchSize >= 1, $"--batch-size must be >= 1, got {BatchSize}");
        Require(LearningRate > 0, $"--lr must be > 0, got {LearningRate}");
        Require(MixedPrecision == MixedPrecisionMode.No || Dtype == AsdDtypeName.F32, $"--mixed-precision {MixedPrecision} keeps fp32 master weights: use --dtype F32, not {Dtype}");
        Require(MixedPrecision != MixedPrecisionMode.Fp16 || Device.StartsWith("cuda", StringComparison.Ordinal), "--mixed-precision Fp16 needs --device cuda; use Bf16 on the CPU");
        Require(Distance != DistanceKind.LpipsAlex || (AlexNet is not null && Lpips is not null), "--distance LpipsAlex needs --alexnet and --lpips");
    }

    public FitOptions ToFitOptions() => new(Model, Shots, ShotSeed, ImageSize, UnetSteps, DecoderSteps, AutoencoderSteps, BatchSize, LearningRate, Seed,
        Device, Dtype, Distance, AlexNet, Lpips, ResNet18, Prompts, ForegroundMasks, MixedPrecision);
}

[Verb("fit", HelpText = "Fine-tune one model for all categories on K shots each and write a checkpoint.")]
public sealed class FitOptionsVerb : FitFlags
{
    [Option("out", Required = true, HelpText = "Checkpoint folder to write.")]
    public string Out { get; set; } = "";
}

[Verb("eval", HelpText = "Evaluate a checkpoint (or fit, then evaluate) on a dataset's test split; writes results.json, report.md and figures.")]
public sealed class EvalOptionsVerb : FitFlags
{
    public override void Validate()
    {
        base.Validate();
        ParseScales(Scales);
        Require(NumInferenceSteps >= 1, $"--num-inference-steps must be >= 1, got {NumInferenceSteps}");
        Require(NoiseStrength is null || NoiseStrength is >= 0 and <= 1, $"--noise-strength must be in [0, 1], got {NoiseStrength}");
        Require(InpaintBatch >= 0, $"--inpaint-batch must be >= 0, got {InpaintBatch}");
        Require(MaxImages is null || MaxImages >= 1, $"--max-images must be >= 1, got {MaxImages}");
    }

    [Option("checkpoint", HelpText = "A checkpoint written by fit (default: fit first with the fit flags).")]
    public string? Checkpoint { get; set; }

    [Option("out", Required = true, HelpText = "Report folder.")]
    public string Out { get; set; } = "";

    [Option("masks", Default = MaskStrategy.Full, HelpText = "Full (multi-scale + prototype), MultiScale, or Prototype (E only, PatchCore-like baseline).")]
    public MaskStrategy Masks { get; set; } = MaskStrategy.Full;

    [Option("num-inference-steps", Default = 50, HelpText = "DDIM schedule length.")]
    public int NumInferenceSteps { get; set; } = 50;

    [Option("noise-strength", HelpText = "λ for every category (default: each category's value from the prompt file).")]
    public double? NoiseStrength { get; set; }

    [Option("scales", Default = "1,2,4,8", HelpText = "Grid scales k.")]
    public string Scales { get; set; } = "1,2,4,8";

    [Option("inpaint-batch", Default = 0, HelpText = "Masks per UNet batch (0: from available memory).")]
    public int InpaintBatch { get; set; } = 0;

    [Option("max-images", HelpText = "Evaluate at most N test images per category (spread over normal and anomalous).")]
    public int? MaxImages { get; set; }
}

public static class FitEvalCommands
{
    public static int Fit(FitOptionsVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("fit");
        if (o.Data is null) throw new ArgumentException("--data is required");
        var dataset = Datasets.Open(o.Data);
        var categories = Categories(o.Categories, dataset);
        var watch = Stopwatch.StartNew();
        var (model, meta) = Fitting.Fit(dataset, categories, o.ToFitOptions(), log, CliSupport.Progress());
        using (model)
        {
            model.Save(o.Out, meta.ToJson());
        }
        log.LogInformation("checkpoint written to {Out} ({Seconds:F0} s)", o.Out, watch.Elapsed.TotalSeconds);
        return 0;
    }

    public static int Eval(EvalOptionsVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("eval");
        if (o.Data is null) throw new ArgumentException("--data is required");
        var dataset = Datasets.Open(o.Data);
        var watch = Stopwatch.StartNew();
        InpaintingModel model;
        CheckpointMetadata meta;
        double fitSeconds = 0;
        if (o.Checkpoint is not null)
        {
            (model, meta) = LoadCheckpoint(o.Checkpoint, o.Device, o.ResNet18, o.AlexNet, o.Lpips, log);
        }
        else
        {
            var fit = o.ToFitOptions();
            // The E-only baseline never runs the diffusion model: skip its training.
            if (o.Masks == MaskStrategy.Prototype) fit = fit with { UnetSteps = 0, DecoderSteps = 0, AutoencoderSteps = 0 };
            (model, meta) = Fitting.Fit(dataset, Categories(o.Categories, dataset), fit, log, CliSupport.Progress());
            fitSeconds = watch.Elapsed.TotalSeconds;
        }
        using (model)
        {
            var categories = o.Categories is null ? meta.Categories.Select(c => c.Category).ToList() : Categories(o.Categories, dataset);
            if (o.NoiseStrength is double lambda)
                meta = meta with { Categories = meta.Categories.Select(c => c with { NoiseStrength = lambda }).ToList() };
            var masks = o.Masks;
            if (masks == MaskStrategy.Full && meta.Shots == 0)
            {
                log.LogWarning("no shots, no prototype bank: scoring with multi-scale masks only");
                masks = MaskStrategy.MultiScale;
            }
            var options = new DetectorOptions(masks, EngineOptions.ParseScales(o.Scales),
                Inpaint: new InpaintOptions(o.NumInferenceSteps, 0.4, o.InpaintBatch, o.Seed));
            var result = Evaluation.Run(model, meta, dataset, categories, options, log, CliSupport.Progress(), o.MaxImages);
            var run = new JsonObject
            {
                ["model"] = meta.ModelSource, ["checkpoint"] = o.Checkpoint ?? "(fitted in this run, not saved)", ["shots"] = meta.Shots, ["image_size"] = meta.ImageSize,
                ["scales"] = o.Scales, ["max_images"] = o.MaxImages?.ToString() ?? "all",
                ["masks"] = masks.ToString(), ["distance"] = meta.Distance, ["num_inference_steps"] = o.NumInferenceSteps,
                ["noise_strength"] = new JsonObject(meta.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, c.NoiseStrength))),
                ["seed"] = o.Seed, ["device"] = o.Device, ["fit_seconds"] = fitSeconds,
            };
            run["wall_seconds_total"] = watch.Elapsed.TotalSeconds;
            ReportWriter.Write(o.Out, result, run);
            Console.WriteLine(ReportWriter.Table(result));
            Console.WriteLine($"wall time: {watch.Elapsed.TotalSeconds:F0} s (fit {fitSeconds:F0} s, eval {result.Seconds:F0} s); report: {Path.Combine(o.Out, "report.md")}");
        }
        return 0;
    }

    /// <summary>Loads a checkpoint with its categories' conditions and the scoring backbones.</summary>
    public static (InpaintingModel, CheckpointMetadata) LoadCheckpoint(string path, string device, string? resnet18, string? alexnet, string? lpips, ILogger log)
    {
        var model = InpaintingModel.Load(path, device);
        try
        {
            var meta = CheckpointMetadata.FromJson(model.Info()["metadata"] as JsonObject, path);
            string banks = Path.Combine(path, "prototype_banks.safetensors");
            if (meta.Shots > 0 && !File.Exists(banks))
                throw new FileNotFoundException($"checkpoint '{path}' was fitted with {meta.Shots} shot(s) but its prototype banks file '{banks}' is missing", banks);
            var tokenizer = Fitting.TokenizerFor(Directory.Exists(Path.Combine(path, "tokenizer")) ? path : meta.ModelSource, meta.Tokenizer);
            foreach (var c in meta.Categories) model.SetCategory(c.Category, tokenizer.EncodePadded(c.All), tokenizer.MaxLength);
            var distance = meta.Distance == "lpips_alex" ? DistanceKind.LpipsAlex : DistanceKind.Resnet18Uniform;
            Fitting.ConfigureScoring(model, resnet18, distance, alexnet, lpips);
            log.LogInformation("loaded {Path}: {Count} categories, image size {Size}", path, meta.Categories.Count, meta.ImageSize);
            return (model, meta);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public static IReadOnlyList<string> Categories(string? list, IDataset dataset)
    {
        var wanted = CliSupport.SplitList(list);
        if (wanted.Count == 0) return dataset.Categories;
        foreach (string c in wanted)
            if (!dataset.Categories.Contains(c))
                throw new KeyNotFoundException($"unknown category '{c}' in '{dataset.Root}' (known: {string.Join(", ", dataset.Categories)})");
        return wanted;
    }
}
