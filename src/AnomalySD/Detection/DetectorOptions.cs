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
    /// <summary>The views of the prototype banks (eq. 13's Aug); null: the banks as the checkpoint has them. Banks made with other
    /// views are rebuilt from the checkpoint's shots (<see cref="Checkpoints.ShotBanks"/>).</summary>
    public BankViews? Views { get; init; }

    /// <summary>The nearest-neighbour search of E (eq. 14): global (default) or position-aware within r grid cells.</summary>
    public PatchMatching Matching { get; init; } = PatchMatching.Global;

    /// <summary>How the image score is read off the smoothed map: max (default) or a top-k mean.</summary>
    public ImageScoreRule ImageScore { get; init; } = ImageScoreRule.Max;

    /// <summary>Transductive (mutual) scoring of sets of images; off by default.</summary>
    public TransductiveOptions Transductive { get; init; } = TransductiveOptions.Off;

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

/// <summary>Transductive scoring: <see cref="Off"/>; <see cref="On"/>: the mutual map M fused with the shot-bank map E; <see cref="Mutual"/>:
/// M alone (zero-shot: no shot, no bank needed).</summary>
public enum TransductiveMode
{
    Off,
    On,
    Mutual,
}

/// <summary>
/// Transductive (mutual, MuSc-style) scoring of a set of images of one category scored together (an evaluation's test split, the inputs
/// of one <c>detect</c> run): each image is compared with the others of the set (<see cref="MutualScoring"/>), and its map is M fused with
/// E (<see cref="MutualScoring.Fuse"/>) or M alone.
/// </summary>
/// <param name="Mode">Off, On (fused with E) or Mutual (M alone).</param>
/// <param name="References">At most this many reference images per image (a seeded symmetric subset, <see cref="MutualScoring.References"/>);
/// null: <see cref="DefaultReferences"/>.</param>
/// <param name="Fraction">The share of the smallest per-reference distances averaged into M (MuSc: 0.3).</param>
public sealed record TransductiveOptions(TransductiveMode Mode, int? References = null, double Fraction = MutualScoring.DefaultFraction)
{
    /// <summary>The default cap on the references per image: every other image of a split of up to this many + 1 images, else a subset
    /// of this many. It bounds the cost at about <see cref="DefaultReferences"/>/2 pair comparisons per image.</summary>
    public const int DefaultReferences = 32;

    public static readonly TransductiveOptions Off = new(TransductiveMode.Off);

    public bool Enabled => Mode != TransductiveMode.Off;

    /// <summary>The reference cap in force.</summary>
    public int ReferencesCap => References ?? DefaultReferences;

    public override string ToString() => Mode switch
    {
        TransductiveMode.Off => "off",
        TransductiveMode.On => $"on (M fused with E, at most {ReferencesCap} references per image)",
        _ => $"mutual (M alone, at most {ReferencesCap} references per image)",
    };
}
