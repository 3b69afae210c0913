namespace AnomalySD.Scoring;

/// <summary>
/// Gaussian smoothing of anomaly maps with the semantics of <c>scipy.ndimage.gaussian_filter(map, sigma,
/// mode="reflect", truncate=4.0)</c>.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Kernel: radius R = int(truncate·σ + 0.5) (16 for σ = 4, i.e. 33 taps), weights exp(−x²/(2σ²)) for
/// x = −R..R normalised to sum 1 (scipy <c>_gaussian_kernel1d</c>).</item>
/// <item>Separable: rows direction (axis 0) first, then columns (axis 1), each a 1-D correlation, in double.</item>
/// <item>Border: scipy "reflect" = half-sample symmetric, (d c b a | a b c d | d c b a), repeated as often as
/// needed when R exceeds the map size. This differs from PyTorch/kornia "reflect" (d c b | a b c d), which
/// anomalib uses. Being symmetric with a symmetric kernel, it preserves the total mass and constants.</item>
/// </list>
/// </remarks>
public static class GaussianSmoothing
{
    /// <summary>The normalised 1-D kernel of length 2R+1, R = int(truncate·σ + 0.5).</summary>
    public static double[] Kernel(double sigma, double truncate = 4.0)
    {
        if (!(sigma > 0) || double.IsInfinity(sigma)) throw new ArgumentOutOfRangeException(nameof(sigma), sigma, "σ must be positive.");
        if (!(truncate > 0) || double.IsInfinity(truncate)) throw new ArgumentOutOfRangeException(nameof(truncate));
        int radius = (int)(truncate * sigma + 0.5);
        var k = new double[2 * radius + 1];
        double sum = 0;
        for (int x = -radius; x <= radius; x++)
        {
            double w = Math.Exp(-0.5 / (sigma * sigma) * x * x);
            k[x + radius] = w;
            sum += w;
        }
        for (int i = 0; i < k.Length; i++) k[i] /= sum;
        return k;
    }

    /// <summary>Index of position <paramref name="i"/> (any integer) in a length-<paramref name="n"/> axis under half-sample reflection.</summary>
    public static int Reflect(int i, int n)
    {
        int period = 2 * n;
        int m = i % period;
        if (m < 0) m += period;
        return m < n ? m : period - 1 - m;
    }

    /// <summary>Smooths an H×W map (σ in pixels, default 4 as in the paper); returns a new map.</summary>
    public static Map2D Blur(Map2D map, double sigma = ScoreFusion.DefaultSigma, double truncate = 4.0)
    {
        ArgumentNullException.ThrowIfNull(map);
        double[] k = Kernel(sigma, truncate);
        int r = k.Length / 2, h = map.Height, w = map.Width;
        var tmp = new double[h * w];
        // axis 0 (along columns: vary y)
        for (int y = 0; y < h; y++)
        {
            for (int x = 0; x < w; x++)
            {
                double acc = 0;
                for (int t = -r; t <= r; t++) acc += k[t + r] * map.Data[Reflect(y + t, h) * w + x];
                tmp[y * w + x] = acc;
            }
        }
        var outMap = new Map2D(h, w);
        // axis 1 (along rows: vary x)
        for (int y = 0; y < h; y++)
        {
            int row = y * w;
            for (int x = 0; x < w; x++)
            {
                double acc = 0;
                for (int t = -r; t <= r; t++) acc += k[t + r] * tmp[row + Reflect(x + t, w)];
                outMap.Data[row + x] = acc;
            }
        }
        return outMap;
    }
}
