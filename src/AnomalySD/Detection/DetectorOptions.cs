using AnomalySD.Calibration;
using AnomalySD.Engine;
using AnomalySD.Scoring;

namespace AnomalySD.Detection;

/// <summary>Which inpainting masks score an image (paper section 4.2 and Table 5).</summary>
public enum MaskStrategy
{
    /// <summary>Multi-scale grid masks + the prototype-guided mask (the paper's method).</summary>
    Full,
    /// <summary>Multi-scale grid masks only (used when no prototype bank exists, e.g. 0 shots).</summary>
    MultiScale,
    /// <summary>Baseline without inpainting: the prototype error map E (eq. 14) upsampled is the anomaly map (PatchCore-like).</summary>
    Prototype,
}

/// <summary>Scoring options (section 4.3 defaults).</summary>
/// <param name="Scales">Grid scales K (paper: 1, 2, 4, 8 = 85 masks).</param>
/// <param name="Alpha">α of eq. 21 (paper: 0.1), used for categories without a calibration.</param>
/// <param name="Sigma">Gaussian blur σ of the final map, in pixels of the analysis resolution (paper: 4).</param>
/// <param name="Calibration">Per-category calibration (fusion weights, map scales, thresholds); categories without one use eq. 21.</param>
public sealed record DetectorOptions(MaskStrategy Masks = MaskStrategy.Full, IReadOnlyList<int>? Scales = null, double Alpha = ScoreFusion.DefaultAlpha,
                                     double Sigma = ScoreFusion.DefaultSigma, InpaintOptions? Inpaint = null,
                                     IReadOnlyDictionary<string, CategoryCalibration>? Calibration = null)
{
    /// <summary>The fusion weights and map scales that score <paramref name="category"/>.</summary>
    public (FusionWeights Weights, MapScales Scales) FusionFor(string category) => Masks switch
    {
        MaskStrategy.Prototype => (FusionWeights.ErrorMapOnly, MapScales.Raw),
        _ when Calibration?.GetValueOrDefault(category) is { } c => Masks == MaskStrategy.MultiScale && c.Weights.Prototype > 0
            ? (new FusionWeights(c.Weights.MultiScale + c.Weights.Prototype, 0, c.Weights.ErrorMap), c.Scales)
            : (c.Weights, c.Scales),
        MaskStrategy.MultiScale => (new FusionWeights(1, 0, 0), MapScales.Raw),
        _ => (FusionWeights.Paper(Alpha), MapScales.Raw),
    };
}
