using System.Text.Json.Nodes;
using AnomalySD.IO;

namespace AnomalySD.Scoring;

/// <summary>
/// The weights of the final anomaly map, a generalisation of eq. 21 with a third term, the prototype error map E itself:
/// <code>S_map = MultiScale · S_ms / σ_ms + Prototype · S_pg / σ_pg + ErrorMap · Upsample(E) / σ_E</code>
/// where σ_k are the map scales (<see cref="Scales"/>; 1 = raw). The paper's eq. 21 is (1 − α, α, 0) on raw maps, α = 0.1.
/// </summary>
/// <param name="MultiScale">Weight of S_ms (eq. 19), &gt;= 0.</param>
/// <param name="Prototype">Weight of S_pg (eq. 20), &gt;= 0.</param>
/// <param name="ErrorMap">Weight of the bilinearly upsampled E (eq. 14), &gt;= 0.</param>
public sealed record FusionWeights(double MultiScale, double Prototype, double ErrorMap)
{
    /// <summary>Eq. 21 with the paper's α = 0.1.</summary>
    public static FusionWeights Paper(double alpha = ScoreFusion.DefaultAlpha) => new(1 - alpha, alpha, 0);

    /// <summary>The E-only baseline (PatchCore-like).</summary>
    public static readonly FusionWeights ErrorMapOnly = new(0, 0, 1);

    /// <summary>Whether any inpainting term counts: if not, scoring needs no UNet work at all.</summary>
    public bool UsesInpainting => MultiScale > 0 || Prototype > 0;

    public JsonObject ToJson() => new() { ["multi_scale"] = MultiScale, ["prototype"] = Prototype, ["error_map"] = ErrorMap };

    /// <exception cref="InvalidDataException">a weight missing, negative or above 1, or weights that do not sum to 1 (naming the file and key).</exception>
    public static FusionWeights FromJson(JsonInput j)
    {
        var w = new FusionWeights(j["multi_scale"].Double(0, 1), j["prototype"].Double(0, 1), j["error_map"].Double(0, 1));
        double sum = w.MultiScale + w.Prototype + w.ErrorMap;
        return Math.Abs(sum - 1) <= 1e-6 ? w : throw j.Error($"must sum to 1, got {sum.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}");
    }

    public override string ToString() => FormattableString.Invariant($"S_ms {MultiScale:0.##}, S_pg {Prototype:0.##}, E {ErrorMap:0.##}");

    /// <summary>The points of the simplex w_ms + w_pg + w_E = 1 on a grid of <paramref name="step"/> (1/step must be a whole number).</summary>
    public static IReadOnlyList<FusionWeights> SimplexGrid(double step)
    {
        int n = (int)Math.Round(1 / step);
        if (n < 1 || Math.Abs(n * step - 1) > 1e-9) throw new ArgumentException($"weight step {step} must divide 1 (e.g. 0.1)");
        var grid = new List<FusionWeights>();
        for (int a = 0; a <= n; a++)
        for (int b = 0; a + b <= n; b++)
            grid.Add(new FusionWeights(a / (double)n, b / (double)n, (n - a - b) / (double)n));
        return grid;
    }
}

/// <summary>The scales σ_ms, σ_pg, σ_E that divide each map before the weights apply (their spread on the calibration normals).</summary>
public sealed record MapScales(double MultiScale, double Prototype, double ErrorMap)
{
    public static readonly MapScales Raw = new(1, 1, 1);

    public JsonObject ToJson() => new() { ["multi_scale"] = MultiScale, ["prototype"] = Prototype, ["error_map"] = ErrorMap };

    /// <exception cref="InvalidDataException">a scale missing or not a positive number (naming the file and key).</exception>
    public static MapScales FromJson(JsonInput j) =>
        new(Positive(j["multi_scale"]), Positive(j["prototype"]), Positive(j["error_map"]));

    private static double Positive(JsonInput v)
    {
        double d = v.Double();
        return d > 0 ? d : throw v.Error($"must be > 0, got {v.Describe()}");
    }
}

/// <summary>
/// Normalised scores, as anomalib reports them: a piecewise-linear map of raw scores with the calibrated threshold at 0.5
/// and the calibration set's minimum and maximum at 0 and 1, clamped to [0, 1]:
/// <code>n(s) = 0.5 · (s − min) / (t − min)  for s ≤ t;   0.5 + 0.5 · (s − t) / (max − t)  for s &gt; t</code>
/// Monotonic (non-decreasing), so AUROC and rankings are unchanged. Pixel maps use the same map.
/// </summary>
public sealed record ScoreNormalization(double Min, double Threshold, double Max)
{
    /// <exception cref="ArgumentException">unless min &lt; threshold &lt; max, all finite.</exception>
    public static ScoreNormalization Create(double min, double threshold, double max)
    {
        if (!(double.IsFinite(min) && double.IsFinite(threshold) && double.IsFinite(max) && min < threshold && threshold < max))
            throw new ArgumentException($"normalisation needs min < threshold < max, got {min}, {threshold}, {max}");
        return new ScoreNormalization(min, threshold, max);
    }

    public double Apply(double s)
    {
        double n = s <= Threshold ? 0.5 * (s - Min) / (Threshold - Min) : 0.5 + 0.5 * (s - Threshold) / (Max - Threshold);
        return double.IsNaN(n) ? 0 : Math.Clamp(n, 0, 1);
    }

    public Map2D Apply(Map2D map) => new(map.Height, map.Width, Array.ConvertAll(map.Data, Apply));

    public JsonObject ToJson() => new() { ["min"] = Min, ["threshold"] = Threshold, ["max"] = Max };

    /// <exception cref="InvalidDataException">a value missing, or not min &lt; threshold &lt; max (naming the file and key).</exception>
    public static ScoreNormalization FromJson(JsonInput j)
    {
        double min = j["min"].Double(), threshold = j["threshold"].Double(), max = j["max"].Double();
        return min < threshold && threshold < max ? new ScoreNormalization(min, threshold, max)
            : throw j.Error($"must have min < threshold < max, got {min.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}, {threshold.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}, {max.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}");
    }
}
