using System.Globalization;

namespace AnomalySD.Scoring;

/// <summary>How an image score is read off its smoothed anomaly map.</summary>
public enum ImageScoreKind
{
    /// <summary>The maximum (the paper's S_I, section 4.3).</summary>
    Max,
    /// <summary>The mean of the largest <see cref="ImageScoreRule.Fraction"/> of the pixels.</summary>
    TopK,
}

/// <summary>
/// The image score of a smoothed map: <see cref="Max"/> (the default, the paper's) or <see cref="TopK"/>: the mean of the
/// k = max(1, ⌈f·H·W⌉) largest pixel values (f = 0.01 by default: 656 of the 65,536 pixels of a 256 x 256 map). A defect larger
/// than one blurred peak then counts by its extent, and a single hot pixel of a normal image counts less.
/// </summary>
/// <param name="Kind">Max or TopK.</param>
/// <param name="Fraction">f in (0, 1] for TopK (1 = the mean of the map); ignored for Max.</param>
public sealed record ImageScoreRule(ImageScoreKind Kind, double Fraction = ImageScoreRule.DefaultFraction)
{
    /// <summary>The default share of pixels of <see cref="TopK"/>: the top 1 %.</summary>
    public const double DefaultFraction = 0.01;

    public static readonly ImageScoreRule Max = new(ImageScoreKind.Max);

    public static ImageScoreRule TopK(double fraction = DefaultFraction) => fraction is > 0 and <= 1 && double.IsFinite(fraction)
        ? new ImageScoreRule(ImageScoreKind.TopK, fraction)
        : throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "the top-k fraction must be in (0, 1]");

    /// <summary>The number of pixels a top-k mean averages for a map of <paramref name="pixels"/> pixels: max(1, ⌈f·pixels⌉), with a
    /// 1e-9 guard so that f·pixels landing just above a whole number in floating point does not add a pixel.</summary>
    public int Count(int pixels) => Math.Clamp((int)Math.Ceiling(Fraction * pixels - 1e-9), 1, pixels);

    /// <summary>The image score of <paramref name="smoothed"/>.</summary>
    public double Apply(Map2D smoothed)
    {
        if (Kind == ImageScoreKind.Max) return smoothed.Max();
        int k = Count(smoothed.Data.Length);
        var values = (double[])smoothed.Data.Clone();
        Array.Sort(values);
        double sum = 0;
        for (int i = values.Length - k; i < values.Length; i++) sum += values[i];
        return sum / k;
    }

    /// <summary>"max", "topk" (f = 0.01) or "topk:F" (F in (0, 1], e.g. topk:0.05).</summary>
    /// <exception cref="ArgumentException">anything else.</exception>
    public static ImageScoreRule Parse(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t == "max") return Max;
        if (t == "topk") return TopK();
        if (t.StartsWith("topk:", StringComparison.Ordinal) && double.TryParse(t["topk:".Length..], NumberStyles.Float, CultureInfo.InvariantCulture, out double f)
            && f is > 0 and <= 1)
            return TopK(f);
        throw new ArgumentException($"image score '{text}': must be max, topk (the mean of the top 1 % of the map's pixels) or topk:F with F in (0, 1]");
    }

    public override string ToString() => Kind == ImageScoreKind.Max ? "max" : $"topk:{Fraction.ToString(CultureInfo.InvariantCulture)}";
}
