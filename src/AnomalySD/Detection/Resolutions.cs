using System.Globalization;

namespace AnomalySD.Detection;

/// <summary>
/// The context margin of an inpainting window (multi-resolution scoring): each mask is inpainted inside a square window,
/// its bounding box grown by <see cref="Margin"/> × the box side on each side (at least max(64, P/4) pixels, shifted inside the
/// image), resampled to the inpainting resolution P and pasted back inside the mask only. <see cref="Full"/> is the paper's
/// behaviour: the whole image, nothing pasted.
/// </summary>
public readonly record struct WindowContext(double Margin)
{
    /// <summary>The whole image, the paper's behaviour.</summary>
    public static readonly WindowContext Full = new(-1);

    public bool IsFull => Margin < 0;

    /// <summary>The engine's form: null for full, else the margin.</summary>
    public double? ForEngine => IsFull ? null : Margin;

    /// <summary>"full" or a number &gt;= 0 (a fraction of the box side per side, e.g. 0.5).</summary>
    /// <exception cref="ArgumentException">anything else.</exception>
    public static WindowContext Parse(string text)
    {
        string t = text.Trim();
        if (t.Equals("full", StringComparison.OrdinalIgnoreCase)) return Full;
        if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double m) && m >= 0 && double.IsFinite(m)) return new WindowContext(m);
        throw new ArgumentException($"--window-context '{text}' must be 'full' or a number >= 0 (a fraction of the mask's box side, e.g. 0.5)");
    }

    public override string ToString() => IsFull ? "full" : Margin.ToString("R", CultureInfo.InvariantCulture);
}

/// <summary>Where the perceptual distance D of a window is computed (<see cref="InpaintOptions.DistanceAtInpaintSize"/>).</summary>
public enum DistanceResolution
{
    /// <summary>At the analysis resolution: the window's own size, the pasted image resampled back.</summary>
    Analysis,
    /// <summary>At the inpainting resolution: the window's crop at P against the output at P, D then resampled to the window.</summary>
    Inpainting,
}

/// <summary>
/// The three resolutions of scoring, and their defaults:
/// <list type="bullet">
/// <item>inpainting resolution P: what the SD model runs at (<c>--image-size</c>; 64 compact, 512 SD);</item>
/// <item>analysis resolution A: where ψ/E (eq. 12-14), M^(p) (eq. 15), D (eq. 16-17) and S_map (eq. 18-21) are computed
/// (σ = 4 is in pixels at A; 256 compact, 512 SD);</item>
/// <item>evaluation resolution: where maps meet the ground truth (256, as anomalib and most papers report; 0 = each image's
/// original size). Maps are resized bilinearly, masks with nearest neighbour from their original files.</item>
/// </list>
/// </summary>
public static class Resolutions
{
    public const int DefaultEvalSize = 256;

    /// <summary>Default window context, chosen by the sweep on ../shared/data (README, "Three resolutions and inpainting windows"):
    /// the whole image (the paper's), 85.3 mean of image and pixel AUROC against 79.3 for 1.0 and 72.9 for 0.5.</summary>
    public static readonly WindowContext DefaultWindowContext = WindowContext.Full;

    /// <summary>Default place of the distance D, chosen by the sweep (README).</summary>
    public const DistanceResolution DefaultDistanceResolution = DistanceResolution.Analysis;

    /// <summary>Default PatchCore local aggregation of prototype features (1 = off), chosen by measurement (README).</summary>
    public const int DefaultFeatureAggregation = 1;

    public static int DefaultInpaintSize(bool compact) => compact ? 64 : 512;
    public static int DefaultAnalysisSize(bool compact) => compact ? 256 : 512;
}
