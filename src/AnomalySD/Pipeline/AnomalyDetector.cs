using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Masks;
using AnomalySD.Scoring;

namespace AnomalySD.Pipeline;

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

/// <summary>The score of one image: maps at the analysis resolution and the image score (max of the smoothed map).</summary>
/// <param name="Restored">With <c>restored: true</c>: the inpainting (pasted, RGB in [0, 1]) of the mask whose distance inside it
/// was the largest: what the method believes the product should look like there. Null when no mask was inpainted.</param>
public sealed record ImageScore(Map2D SmoothedMap, double Score, Map2D? ErrorMap, BinaryMask? PrototypeMask, RgbImage? Restored = null);

/// <summary>The three maps fused by <see cref="FusionWeights"/>, at the analysis resolution: S_ms (eq. 19), S_pg (eq. 20) and
/// the bilinearly upsampled E (eq. 14); null where the strategy does not compute them. S_pg is all zero when M^(p) is empty.</summary>
public sealed record ScoreComponents(Map2D? MultiScale, Map2D? Prototype, Map2D? ErrorMap, Map2D? RawErrorMap, BinaryMask? PrototypeMask, RgbImage? Restored);

/// <summary>
/// Scores images with a fitted <see cref="InpaintingModel"/> (section 4.2-4.3): grid masks M^(k)_{i,j}, the
/// prototype-guided mask M^(p) = Upsample(I(E &gt; r)) with r from eq. 15, all inpainted in one native call; then
/// S^(k) (eq. 18), S_ms (eq. 19), S_pg (eq. 20), the fused map (eq. 21, or calibrated <see cref="FusionWeights"/>), Gaussian
/// blur, max. A category whose weights give the inpainting terms no weight is scored from E alone, without UNet work.
/// </summary>
public sealed class AnomalyDetector(InpaintingModel model, DetectorOptions options)
{
    public DetectorOptions Options { get; } = options;

    // Grid masks and their Map2D form depend only on the image size: built once, reused for every image.
    private (int H, int W, IReadOnlyList<GridMask> Grid, Map2D[] Maps)? _grid;

    private (IReadOnlyList<GridMask> Grid, Map2D[] Maps) GridFor(int h, int w)
    {
        if (_grid is not { } g || g.H != h || g.W != w)
        {
            var grid = MaskProposals.Grid(h, w, Options.Scales ?? MaskProposals.DefaultScales);
            _grid = g = (h, w, grid, grid.Select(m => ToMap(m.Mask)).ToArray());
        }
        return (g.Grid, g.Maps);
    }

    /// <summary>Scores <paramref name="image"/> (RGB in [0, 1] at the analysis resolution) of <paramref name="category"/>.
    /// <paramref name="noiseStrength"/> overrides the inpaint options' λ (per-category λ). <paramref name="restored"/>: also return
    /// the inpainting of the highest-scoring mask (for pictures).</summary>
    public ImageScore Score(string category, RgbImage image, double? noiseStrength = null, bool restored = false)
    {
        var (weights, scales) = Options.FusionFor(category);
        var c = Components(category, image, noiseStrength, weights.UsesInpainting, weights.ErrorMap > 0, restored, multiScale: weights.MultiScale > 0);
        var smoothed = GaussianSmoothing.Blur(ScoreFusion.Weighted(c.MultiScale, c.Prototype, c.ErrorMap, weights, scales, image.Height, image.Width), Options.Sigma);
        return new ImageScore(smoothed, smoothed.Max(), c.RawErrorMap, c.PrototypeMask, c.Restored);
    }

    /// <summary>The maps that <see cref="Score"/> fuses (for calibration, which fuses them under many weights).</summary>
    /// <param name="inpainting">Compute S_ms and S_pg (the UNet work).</param>
    /// <param name="errorMap">Return the upsampled E.</param>
    /// <param name="multiScale">Inpaint the grid masks for S_ms. False (a calibrated weight of 0 on S_ms) inpaints the prototype mask
    /// alone, with the noise it has among the grid masks (seed + its index), and returns no S_ms: 1 mask of UNet work instead of 86.</param>
    public ScoreComponents Components(string category, RgbImage image, double? noiseStrength, bool inpainting, bool errorMap, bool restored = false,
                                      bool multiScale = true)
    {
        int h = image.Height, w = image.Width;
        var inpaint = Options.Inpaint ?? new InpaintOptions();
        if (noiseStrength is double lambda) inpaint = inpaint with { NoiseStrength = lambda };
        bool prototypeTerm = inpainting && Options.Masks == MaskStrategy.Full;

        Map2D? errors = null, upsampled = null;
        BinaryMask? prototypeMask = null;
        if (prototypeTerm || errorMap)
        {
            errors = model.ErrorMap(category, image);
            if (errorMap) upsampled = Bilinear(errors, h, w);
            if (prototypeTerm)
            {
                double r = PrototypeThreshold.Select(errors);
                var mask = PrototypeThreshold.Mask(errors, r, h, w);
                prototypeMask = new BinaryMask(w, h, Array.ConvertAll(mask.Data, v => v > 0.5 ? (byte)1 : (byte)0));
            }
        }
        if (!inpainting) return new ScoreComponents(null, null, upsampled, errors, prototypeMask, null);

        var (allGrid, allGridMaps) = GridFor(h, w);
        IReadOnlyList<GridMask> grid = multiScale ? allGrid : [];
        Map2D[] gridMaps = multiScale ? allGridMaps : [];
        var masks = grid.Select(g => g.Mask).ToList();
        // An empty prototype mask (E constant) inpaints nothing: its S_pg is 0 and needs no UNet work.
        bool usePrototype = prototypeMask is not null && prototypeMask.Count > 0;
        if (usePrototype) masks.Add(prototypeMask!);
        if (masks.Count == 0) return new ScoreComponents(null, prototypeTerm ? new Map2D(h, w) : null, upsampled, errors, prototypeMask, null);
        // Mask i's noise is seeded seed + i: the prototype mask alone keeps the noise it has after the grid masks.
        if (!multiScale) inpaint = inpaint with { Seed = inpaint.Seed + (ulong)allGrid.Count };
        var (distances, inpaintings) = model.InpaintDistances(category, image, masks, inpaint, returnInpaintings: restored);

        var scaleScores = new List<Map2D>();
        foreach (var scale in grid.Select((g, i) => (g, i)).GroupBy(t => t.g.Scale))
        {
            var scaleMasks = scale.Select(t => gridMaps[t.i]).ToList();
            var scaleDistances = scale.Select(t => distances[t.i]).ToList();
            scaleScores.Add(ScoreFusion.ScaleScore(scaleMasks, scaleDistances));
        }
        var prototypeGuided = usePrototype ? ScoreFusion.PrototypeScore(ToMap(prototypeMask!), distances[^1]) : new Map2D(h, w);
        RgbImage? best = null;
        if (inpaintings is not null)
        {
            // The mask with the largest distance inside it: where the method restored the most.
            int arg = Enumerable.Range(0, masks.Count).MaxBy(k => MaxInside(masks[k], distances[k]));
            best = inpaintings[arg];
        }
        return new ScoreComponents(multiScale ? ScoreFusion.HarmonicMean(scaleScores) : null, prototypeTerm ? prototypeGuided : null, upsampled, errors, prototypeMask, best);
    }

    private static double MaxInside(BinaryMask mask, Map2D distance)
    {
        double m = 0;
        for (int i = 0; i < mask.Data.Length; i++) if (mask.Data[i] != 0 && distance.Data[i] > m) m = distance.Data[i];
        return m;
    }

    private static Map2D ToMap(BinaryMask m) => new(m.Height, m.Width, Array.ConvertAll(m.Data, v => (double)v));

    /// <summary>Bilinear resize (align_corners = false, edge clamped), for the E-only baseline.</summary>
    public static Map2D Bilinear(Map2D src, int height, int width)
    {
        var dst = new Map2D(height, width);
        double sy = (double)src.Height / height, sx = (double)src.Width / width;
        for (int y = 0; y < height; y++)
        {
            double fy = Math.Max(0, (y + 0.5) * sy - 0.5);
            int y0 = Math.Min((int)fy, src.Height - 1), y1 = Math.Min(y0 + 1, src.Height - 1);
            double wy = fy - y0;
            for (int x = 0; x < width; x++)
            {
                double fx = Math.Max(0, (x + 0.5) * sx - 0.5);
                int x0 = Math.Min((int)fx, src.Width - 1), x1 = Math.Min(x0 + 1, src.Width - 1);
                double wx = fx - x0;
                dst.Data[y * width + x] = (1 - wy) * ((1 - wx) * src[y0, x0] + wx * src[y0, x1]) + wy * ((1 - wx) * src[y1, x0] + wx * src[y1, x1]);
            }
        }
        return dst;
    }
}
