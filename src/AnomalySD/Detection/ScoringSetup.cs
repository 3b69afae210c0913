using System.Globalization;
using AnomalySD.Calibration;
using AnomalySD.Checkpoints;
using AnomalySD.Engine;
using AnomalySD.Scoring;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Detection;

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
/// <param name="BankViews">Views of the prototype banks (null = the checkpoint's, 4 rotations for every checkpoint fitted so far).</param>
/// <param name="Matching">Nearest-neighbour search of E (null = global).</param>
/// <param name="ImageScore">Image score of the smoothed map (null = max).</param>
/// <param name="Transductive">Transductive (mutual) scoring of sets of images.</param>
/// <param name="TransductiveRefs">At most this many reference images per image (null = <see cref="TransductiveOptions.DefaultReferences"/>).</param>
public sealed record ScoringRequest(MaskStrategy Masks = MaskStrategy.Full, IReadOnlyList<int>? Scales = null, int NumInferenceSteps = 50,
                                    double? NoiseStrength = null, int InpaintBatch = 0, ulong Seed = 0, int? AnalysisSize = null,
                                    WindowContext? WindowContext = null, int? EvalSize = null, bool Calibrate = true,
                                    DistanceResolution? DistanceResolution = null, BankViews? BankViews = null, PatchMatching? Matching = null,
                                    ImageScoreRule? ImageScore = null, TransductiveMode Transductive = TransductiveMode.Off, int? TransductiveRefs = null);

/// <summary>A request resolved against a checkpoint: the metadata with the overrides applied (λ, resolutions, window), the
/// detector's options and the evaluation resolution.</summary>
/// <param name="RawScaleReason">Why the checkpoint's calibrated thresholds and normalisation do not apply to this run's scores (they
/// were made with the default scoring: 4-rotation banks, global matching, max image score, no transductive scoring); null when they
/// apply or there are none. The metadata's calibration is then empty, while the detector's options keep it for λ and the fusion weights.</param>
public sealed record ScoringSetup(CheckpointMetadata Metadata, DetectorOptions Detector, int EvalSize, string? RawScaleReason = null);

/// <summary>The rules that turn a scoring request into scoring options for a checkpoint.</summary>
public static class ScoringRules
{
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

    /// <summary>Why <paramref name="category"/> cannot be scored transductively with <paramref name="options"/> (null: it can). The
    /// fused map (<see cref="TransductiveMode.On"/>) replaces E: a category whose map has inpainting terms has no E-only map to replace.</summary>
    public static string? TransductiveProblem(DetectorOptions options, string category) =>
        options.Transductive.Mode == TransductiveMode.On && options.FusionFor(category).Weights.UsesInpainting
            ? $"category '{category}' is scored with inpainting terms, and --transductive on replaces the error map E: use --masks Prototype, a checkpoint calibrated to E alone, or --transductive mutual"
            : null;

    /// <summary>Applies <paramref name="request"/> to a checkpoint's metadata (overrides logged) and builds the detector options.</summary>
    /// <param name="fittedViews">The views of a category's bank in the loaded model (null or a null answer: 4 rotations, the fit's default).</param>
    /// <exception cref="ArgumentException">a request the checkpoint cannot run (naming why).</exception>
    public static ScoringSetup Resolve(CheckpointMetadata meta, ScoringRequest request, ILogger? log = null, Func<string, BankViews?>? fittedViews = null)
    {
        var transductive = new TransductiveOptions(request.Transductive, request.TransductiveRefs);
        if (request.TransductiveRefs is int refs && refs < 2) throw new ArgumentException($"--transductive-refs must be >= 2, got {refs}");
        if (request.Transductive == TransductiveMode.On && meta.Shots == 0)
            throw new ArgumentException("--transductive on fuses the mutual map with the shot-bank map E, and this checkpoint was fitted with 0 shots: use --transductive mutual (zero-shot)");
        // M alone needs neither a bank nor the inpainting masks: the mask strategy is left as asked.
        var masks = request.Transductive == TransductiveMode.Mutual ? request.Masks : EffectiveMasks(request.Masks, meta, log);
        // A calibration (λ, fusion weights, thresholds, normalisation) belongs to the full method's fused map: with other masks
        // its threshold and normalisation would be applied to scores of another scale, so those scores stay raw.
        bool calibrate = request.Calibrate && masks == MaskStrategy.Full;
        if (request.Calibrate && !calibrate && meta.Calibration.Count > 0)
            log?.LogInformation("--masks {Masks}: the checkpoint's calibration belongs to the full method and is not applied; scores are raw", masks);
        var calibration = calibrate ? meta.Calibration : new Dictionary<string, CategoryCalibration>();
        if (!calibrate) meta = meta with { Calibration = calibration };
        // Options that change the scale of the raw scores leave the calibrated thresholds and normalisation behind (they were made
        // with the default scoring); λ and the fusion weights still say what is computed.
        var changes = new List<string>();
        if (request.BankViews is { } views && meta.Shots > 0 && meta.Categories.Any(c => !views.Equals(fittedViews?.Invoke(c.Category) ?? BankViews.Rot4)))
            changes.Add($"bank views {views}");
        if (request.Matching is { IsGlobal: false } matching) changes.Add($"matching {matching}");
        if (request.ImageScore is { Kind: ImageScoreKind.TopK } imageScore) changes.Add($"image score {imageScore}");
        if (transductive.Enabled) changes.Add($"transductive {request.Transductive.ToString().ToLowerInvariant()}");
        string? rawScale = null;
        if (changes.Count > 0 && meta.Calibration.Count > 0)
        {
            rawScale = $"{string.Join(", ", changes)}: the calibrated thresholds belong to the default scoring";
            log?.LogInformation("{Changes}: the calibrated thresholds and normalisation belong to the default scoring and are not applied; scores are raw (the calibrated λ and fusion weights still apply)",
                                string.Join(", ", changes));
            meta = meta with { Calibration = new Dictionary<string, CategoryCalibration>() };
        }
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
            foreach (var c in meta.Categories.Where(c => !calibration.TryGetValue(c.Category, out var k) || k.Weights.UsesInpainting))
                if (OptionRules.DenoisingSteps(c.NoiseStrength, request.NumInferenceSteps) is string problem)
                    throw new ArgumentException($"category '{c.Category}': noise strength {c.NoiseStrength.ToString(System.Globalization.CultureInfo.InvariantCulture)} {problem}");
        }
        var inpaint = new InpaintOptions(request.NumInferenceSteps, 0.4, request.InpaintBatch, request.Seed, WindowContext: meta.WindowContext.ForEngine,
                                         InpaintSize: meta.ImageSize, DistanceAtInpaintSize: meta.DistanceResolution == DistanceResolution.Inpainting);
        var detector = new DetectorOptions(masks, request.Scales, Inpaint: inpaint, Calibration: calibration)
        {
            Views = meta.Shots > 0 ? request.BankViews : null,
            Matching = request.Matching ?? PatchMatching.Global,
            ImageScore = request.ImageScore ?? ImageScoreRule.Max,
            Transductive = transductive,
        };
        if (transductive.Enabled) log?.LogInformation("transductive scoring: {Mode}", transductive);
        return new ScoringSetup(meta, detector, request.EvalSize ?? meta.EvalSize, rawScale);
    }
}
