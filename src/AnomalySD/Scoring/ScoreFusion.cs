namespace AnomalySD.Scoring;

/// <summary>
/// Anomaly score maps of the paper's section 4.3 (eq. 18-21). All maps are H×W (the image size), double.
/// </summary>
public static class ScoreFusion
{
    /// <summary>The fusion weight α of eq. 21 used in the paper.</summary>
    public const double DefaultAlpha = 0.1;

    /// <summary>The Gaussian smoothing σ of the final anomaly map used in the paper (pixels).</summary>
    public const double DefaultSigma = 4.0;

    /// <summary>
    /// Eq. 18: S^(k) = Σ_{i,j} M^(k)_{i,j} ⊙ D(x, x̂^(k)_{i,j}) for one scale k. <paramref name="masks"/>[p]
    /// is the mask of patch p (0/1 values, or any weights) and <paramref name="distances"/>[p] the distance map
    /// D (eq. 17) between x and the image inpainted with that mask; all the same H×W.
    /// </summary>
    public static Map2D ScaleScore(IReadOnlyList<Map2D> masks, IReadOnlyList<Map2D> distances)
    {
        ArgumentNullException.ThrowIfNull(masks);
        ArgumentNullException.ThrowIfNull(distances);
        if (masks.Count == 0 || masks.Count != distances.Count)
            throw new ArgumentException($"Need as many masks ({masks.Count}) as distance maps ({distances.Count}), at least one.");
        var first = masks[0];
        var s = new Map2D(first.Height, first.Width);
        for (int p = 0; p < masks.Count; p++)
        {
            first.RequireSameShape(masks[p], nameof(masks));
            first.RequireSameShape(distances[p], nameof(distances));
            double[] m = masks[p].Data, d = distances[p].Data;
            for (int i = 0; i < s.Data.Length; i++) s.Data[i] += m[i] * d[i];
        }
        return s;
    }

    /// <summary>
    /// Eq. 19: S_ms = |K| / Σ_k 1/S^(k), elementwise over the scale maps (all the same H×W, values ≥ 0).
    /// </summary>
    /// <remarks>
    /// Zero guard: where any S^(k) is 0 the result is 0, the limit of the harmonic mean as that term → 0⁺
    /// (no epsilon is added, so non-zero inputs give the plain formula; this matches the golden fusion case
    /// exactly). Negative or non-finite inputs are rejected.
    /// </remarks>
    public static Map2D HarmonicMean(IReadOnlyList<Map2D> scales)
    {
        ArgumentNullException.ThrowIfNull(scales);
        if (scales.Count == 0) throw new ArgumentException("Need at least one scale.", nameof(scales));
        var first = scales[0];
        foreach (var sk in scales) first.RequireSameShape(sk, nameof(scales));
        var result = new Map2D(first.Height, first.Width);
        for (int i = 0; i < result.Data.Length; i++)
        {
            double inverseSum = 0;
            bool zero = false;
            foreach (var sk in scales)
            {
                double v = sk.Data[i];
                if (!(v >= 0) || double.IsInfinity(v))
                    throw new ArgumentException($"Scale score {v} at index {i} is negative or not finite.", nameof(scales));
                if (v == 0) { zero = true; break; }
                inverseSum += 1.0 / v;
            }
            result.Data[i] = zero ? 0.0 : scales.Count / inverseSum;
        }
        return result;
    }

    /// <summary>Eq. 20: S_pg = M^(p) ⊙ D(x, x̂^(p)), the prototype-guided score map.</summary>
    public static Map2D PrototypeScore(Map2D prototypeMask, Map2D distance)
    {
        prototypeMask.RequireSameShape(distance, nameof(distance));
        var s = new Map2D(distance.Height, distance.Width);
        for (int i = 0; i < s.Data.Length; i++) s.Data[i] = prototypeMask.Data[i] * distance.Data[i];
        return s;
    }

    /// <summary>Eq. 21: S_map = (1 − α) S_ms + α S_pg, α in [0, 1] (paper: 0.1).</summary>
    public static Map2D Fuse(Map2D multiScale, Map2D prototypeGuided, double alpha = DefaultAlpha)
    {
        if (!(alpha >= 0 && alpha <= 1)) throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "α must be in [0, 1].");
        multiScale.RequireSameShape(prototypeGuided, nameof(prototypeGuided));
        var s = new Map2D(multiScale.Height, multiScale.Width);
        for (int i = 0; i < s.Data.Length; i++)
            s.Data[i] = (1 - alpha) * multiScale.Data[i] + alpha * prototypeGuided.Data[i];
        return s;
    }

    /// <summary>
    /// The fused map before smoothing: <c>w_ms · S_ms / σ_ms + w_pg · S_pg / σ_pg + w_E · E / σ_E</c> over the maps given (a null
    /// map, or a zero weight, drops its term). With the paper's weights (1 − α, α, 0) and unit scales this is exactly
    /// <see cref="Fuse"/> (eq. 21). A map of zeros when no term remains.
    /// </summary>
    public static Map2D Weighted(Map2D? multiScale, Map2D? prototypeGuided, Map2D? errorMap, FusionWeights weights, MapScales scales, int height, int width)
    {
        var s = new Map2D(height, width);
        void Add(Map2D? m, double w, double scale, bool first)
        {
            if (m is null || w == 0) return;
            s.RequireSameShape(m, nameof(m));
            double k = scale == 1 ? w : w / scale;
            if (first) for (int i = 0; i < s.Data.Length; i++) s.Data[i] = k * m.Data[i];
            else for (int i = 0; i < s.Data.Length; i++) s.Data[i] += k * m.Data[i];
        }
        bool any = multiScale is not null && weights.MultiScale != 0;
        Add(multiScale, weights.MultiScale, scales.MultiScale, first: true);
        Add(prototypeGuided, weights.Prototype, scales.Prototype, first: !any);
        any |= prototypeGuided is not null && weights.Prototype != 0;
        Add(errorMap, weights.ErrorMap, scales.ErrorMap, first: !any);
        return s;
    }

    /// <summary>
    /// The full section 4.3 head: S_ms (eq. 19) from the per-scale maps, S_map (eq. 21), its Gaussian-smoothed
    /// version (σ = 4, <see cref="GaussianSmoothing"/>), and the image score S_I = max of the smoothed map.
    /// </summary>
    public static AnomalyScore Score(IReadOnlyList<Map2D> scaleScores, Map2D prototypeGuided,
        double alpha = DefaultAlpha, double sigma = DefaultSigma)
    {
        var ms = HarmonicMean(scaleScores);
        var map = Fuse(ms, prototypeGuided, alpha);
        var smoothed = GaussianSmoothing.Blur(map, sigma);
        return new AnomalyScore(ms, map, smoothed, smoothed.Max());
    }
}

/// <summary>
/// Result of <see cref="ScoreFusion.Score"/>: S_ms (eq. 19), S_map (eq. 21) before smoothing, the smoothed
/// anomaly map used for pixel metrics, and the image score (maximum of the smoothed map).
/// </summary>
public sealed record AnomalyScore(Map2D MultiScale, Map2D Map, Map2D SmoothedMap, double ImageScore);
