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
/// <param name="Alpha">α of eq. 21 (paper: 0.1).</param>
/// <param name="Sigma">Gaussian blur σ of the final map, in pixels of the analysis resolution (paper: 4).</param>
public sealed record DetectorOptions(MaskStrategy Masks = MaskStrategy.Full, IReadOnlyList<int>? Scales = null, double Alpha = ScoreFusion.DefaultAlpha,
                                     double Sigma = ScoreFusion.DefaultSigma, InpaintOptions? Inpaint = null);

/// <summary>The score of one image: maps at the analysis resolution and the image score (max of the smoothed map).</summary>
public sealed record ImageScore(Map2D SmoothedMap, double Score, Map2D? ErrorMap, BinaryMask? PrototypeMask);

/// <summary>
/// Scores images with a fitted <see cref="InpaintingModel"/> (section 4.2-4.3): grid masks M^(k)_{i,j}, the
/// prototype-guided mask M^(p) = Upsample(I(E &gt; r)) with r from eq. 15, all inpainted in one native call; then
/// S^(k) (eq. 18), S_ms (eq. 19), S_pg (eq. 20), S_map (eq. 21), Gaussian blur, max.
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
    /// <paramref name="noiseStrength"/> overrides the inpaint options' λ (per-category λ).</summary>
    public ImageScore Score(string category, RgbImage image, double? noiseStrength = null)
    {
        int h = image.Height, w = image.Width;
        var inpaint = Options.Inpaint ?? new InpaintOptions();
        if (noiseStrength is double lambda) inpaint = inpaint with { NoiseStrength = lambda };

        Map2D? errors = null;
        BinaryMask? prototypeMask = null;
        if (Options.Masks is MaskStrategy.Full or MaskStrategy.Prototype)
        {
            errors = model.ErrorMap(category, image);
            if (Options.Masks == MaskStrategy.Prototype)
            {
                var upsampled = Bilinear(errors, h, w);
                var smoothed = GaussianSmoothing.Blur(upsampled, Options.Sigma);
                return new ImageScore(smoothed, smoothed.Max(), errors, null);
            }
            double r = PrototypeThreshold.Select(errors);
            var mask = PrototypeThreshold.Mask(errors, r, h, w);
            prototypeMask = new BinaryMask(w, h, Array.ConvertAll(mask.Data, v => v > 0.5 ? (byte)1 : (byte)0));
        }

        var (grid, gridMaps) = GridFor(h, w);
        var masks = grid.Select(g => g.Mask).ToList();
        // An empty prototype mask (E constant) inpaints nothing: its S_pg is 0 and needs no UNet work.
        bool usePrototype = prototypeMask is not null && prototypeMask.Count > 0;
        if (usePrototype) masks.Add(prototypeMask!);
        var (distances, _) = model.InpaintDistances(category, image, masks, inpaint);

        var scaleScores = new List<Map2D>();
        foreach (var scale in grid.Select((g, i) => (g, i)).GroupBy(t => t.g.Scale))
        {
            var scaleMasks = scale.Select(t => gridMaps[t.i]).ToList();
            var scaleDistances = scale.Select(t => distances[t.i]).ToList();
            scaleScores.Add(ScoreFusion.ScaleScore(scaleMasks, scaleDistances));
        }
        var prototypeGuided = usePrototype ? ScoreFusion.PrototypeScore(ToMap(prototypeMask!), distances[^1]) : new Map2D(h, w);
        double alpha = Options.Masks == MaskStrategy.MultiScale || !usePrototype ? 0.0 : Options.Alpha;
        var score = ScoreFusion.Score(scaleScores, prototypeGuided, alpha, Options.Sigma);
        return new ImageScore(score.SmoothedMap, score.ImageScore, errors, prototypeMask);
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
