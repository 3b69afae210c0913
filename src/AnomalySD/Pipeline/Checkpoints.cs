using System.Text.Json.Nodes;
using AnomalySD.Engine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Pipeline;

/// <summary>What a user asks of scoring (the CLI's scoring flags), before it is resolved against a checkpoint. Null fields
/// take the checkpoint's recorded value (resolutions, window context) or the category's (λ).</summary>
/// <param name="Masks">Mask strategy; <see cref="MaskStrategy.Full"/> becomes <see cref="MaskStrategy.MultiScale"/> for a 0-shot checkpoint.</param>
/// <param name="Scales">Grid scales K (null = 1, 2, 4, 8).</param>
/// <param name="NumInferenceSteps">DDIM schedule length (paper: 50).</param>
/// <param name="NoiseStrength">λ for every category (null = each category's value).</param>
/// <param name="InpaintBatch">Masks per UNet batch (0 = automatic).</param>
/// <param name="Seed">Seed of the inpainting noise.</param>
/// <param name="AnalysisSize">Analysis resolution (null = the checkpoint's).</param>
/// <param name="WindowContext">Inpainting window context (null = the checkpoint's).</param>
/// <param name="EvalSize">Evaluation resolution (null = the checkpoint's; 0 = original size).</param>
/// <param name="Calibrate">Use the checkpoint's calibration (λ, fusion weights, thresholds) where it has one; false = the paper's
/// fixed values (λ from the prompt file, eq. 21 with α = 0.1).</param>
public sealed record ScoringRequest(MaskStrategy Masks = MaskStrategy.Full, IReadOnlyList<int>? Scales = null, int NumInferenceSteps = 50,
                                    double? NoiseStrength = null, int InpaintBatch = 0, ulong Seed = 0, int? AnalysisSize = null,
                                    WindowContext? WindowContext = null, int? EvalSize = null, bool Calibrate = true,
                                    DistanceResolution? DistanceResolution = null);

/// <summary>A request resolved against a checkpoint: the metadata with the overrides applied (λ, resolutions, window), the
/// detector's options and the evaluation resolution.</summary>
public sealed record ScoringSetup(CheckpointMetadata Metadata, DetectorOptions Detector, int EvalSize);

/// <summary>Loading checkpoints for scoring, and the rules that turn a request into scoring options.</summary>
public static class Checkpoints
{
    /// <summary>Loads a checkpoint written by <c>fit</c>: the model, every category's condition and the scoring backbones.</summary>
    /// <exception cref="InvalidDataException">not a fitted AnomalySD checkpoint.</exception>
    /// <exception cref="FileNotFoundException">the prototype banks of a fitted checkpoint, or the ResNet18 weights, are missing.</exception>
    public static (InpaintingModel Model, CheckpointMetadata Metadata) Load(string path, string device, ScoringBackbones backbones, ILogger log)
    {
        var model = InpaintingModel.Load(path, device);
        try
        {
            var meta = CheckpointMetadata.FromJson(model.Info()["metadata"] as JsonObject, path);
            string banks = Path.Combine(path, "prototype_banks.safetensors");
            if (meta.Shots > 0 && !File.Exists(banks))
                throw new FileNotFoundException($"checkpoint '{path}' was fitted with {meta.Shots} shot(s) but its prototype banks file '{banks}' is missing", banks);
            var tokenizer = Fitting.TokenizerFor(Directory.Exists(Path.Combine(path, "tokenizer")) ? path : meta.ModelSource, meta.Tokenizer,
                                                 meta.TokenizerDir, meta.PadToken);
            foreach (var c in meta.Categories) model.SetCategory(c.Category, tokenizer.EncodePadded(c.All), tokenizer.MaxLength);
            var distance = meta.Distance == "lpips_alex" ? DistanceKind.LpipsAlex : DistanceKind.Resnet18Uniform;
            Fitting.ConfigureScoring(model, backbones with { Distance = distance }, meta.FeatureAggregation);
            log.LogInformation("loaded {Path}: {Count} categories, inpainting {Size} px, analysis {Analysis} px, window context {Window}", path,
                               meta.Categories.Count, meta.ImageSize, meta.AnalysisSize, meta.WindowContext);
            return (model, meta);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The mask strategy a checkpoint can run: without shots there is no prototype bank, so the full method falls
    /// back to multi-scale masks (said once in the log); <see cref="MaskStrategy.Prototype"/> needs a bank.</summary>
    /// <exception cref="ArgumentException">Prototype scoring asked of a 0-shot checkpoint.</exception>
    public static MaskStrategy EffectiveMasks(MaskStrategy requested, CheckpointMetadata meta, ILogger? log)
    {
        if (meta.Shots > 0) return requested;
        if (requested == MaskStrategy.Prototype) throw new ArgumentException("--masks Prototype needs a prototype bank, and this checkpoint was fitted with 0 shots");
        if (requested == MaskStrategy.Full) log?.LogWarning("no shots, no prototype bank: scoring with multi-scale masks only");
        return MaskStrategy.MultiScale;
    }

    /// <summary>Applies <paramref name="request"/> to a checkpoint's metadata (overrides logged) and builds the detector options.</summary>
    public static ScoringSetup Resolve(CheckpointMetadata meta, ScoringRequest request, ILogger? log = null)
    {
        var masks = EffectiveMasks(request.Masks, meta, log);
        // A calibration (λ, fusion weights, thresholds, normalisation) belongs to the full method's fused map: with other masks
        // its threshold and normalisation would be applied to scores of another scale, so those scores stay raw.
        bool calibrate = request.Calibrate && masks == MaskStrategy.Full;
        if (request.Calibrate && !calibrate && meta.Calibration.Count > 0)
            log?.LogInformation("--masks {Masks}: the checkpoint's calibration belongs to the full method and is not applied; scores are raw", masks);
        var calibration = calibrate ? meta.Calibration : new Dictionary<string, CategoryCalibration>();
        if (!calibrate) meta = meta with { Calibration = calibration };
        // Calibrated λ first; a λ given by the user wins over both the calibration and the prompt file.
        meta = meta with { Categories = meta.Categories.Select(c => calibration.TryGetValue(c.Category, out var k) ? c with { NoiseStrength = k.NoiseStrength } : c).ToList() };
        if (request.NoiseStrength is double lambda) meta = meta with { Categories = meta.Categories.Select(c => c with { NoiseStrength = lambda }).ToList() };
        if (request.AnalysisSize is int a && a != meta.AnalysisSize)
        {
            log?.LogInformation("analysis size {Size} px (the checkpoint was fitted at {Fitted} px)", a, meta.AnalysisSize);
            meta = meta with { AnalysisSize = a };
        }
        if (request.WindowContext is WindowContext w && w != meta.WindowContext)
        {
            log?.LogInformation("window context {Window} (the checkpoint was fitted with {Fitted})", w, meta.WindowContext);
            meta = meta with { WindowContext = w };
        }
        if (request.DistanceResolution is DistanceResolution dr && dr != meta.DistanceResolution)
        {
            log?.LogInformation("distance at the {Where} resolution (the checkpoint was fitted with {Fitted})", dr, meta.DistanceResolution);
            meta = meta with { DistanceResolution = dr };
        }
        if (masks != MaskStrategy.Prototype)
            foreach (var (category, k) in calibration.Where(kv => !kv.Value.Weights.UsesInpainting))
                log?.LogInformation("{Category}: the calibrated weights give the inpainting terms no weight: scored from the prototype error map E alone, without UNet work", category);
        if (masks == MaskStrategy.Full)
            foreach (var (category, k) in calibration.Where(kv => kv.Value.Weights is { MultiScale: 0, Prototype: > 0 }))
                log?.LogInformation("{Category}: the calibrated weights give S_ms no weight: only the prototype-guided mask is inpainted (1 mask per image instead of the grid's)", category);
        if (masks != MaskStrategy.Prototype)
        {
            // Refused before any work, as the engine would refuse it at the first image (diffusers does too).
            foreach (var c in meta.Categories.Where(c => (int)(request.NumInferenceSteps * c.NoiseStrength) < 1 &&
                                                         (!calibration.TryGetValue(c.Category, out var k) || k.Weights.UsesInpainting)))
                throw new ArgumentException($"category '{c.Category}': noise strength {c.NoiseStrength} of {request.NumInferenceSteps} inference steps leaves 0 denoising steps; " +
                                            $"use a noise strength >= {1.0 / request.NumInferenceSteps:G4} or more steps");
        }
        var inpaint = new InpaintOptions(request.NumInferenceSteps, 0.4, request.InpaintBatch, request.Seed, WindowContext: meta.WindowContext.ForEngine,
                                         InpaintSize: meta.ImageSize, DistanceAtInpaintSize: meta.DistanceResolution == DistanceResolution.Inpainting);
        return new ScoringSetup(meta, new DetectorOptions(masks, request.Scales, Inpaint: inpaint, Calibration: calibration), request.EvalSize ?? meta.EvalSize);
    }
}
