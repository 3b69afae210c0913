using AnomalySD.Data;

namespace AnomalySD.Masks;

/// <summary>One multi-scale proposal: patch (<paramref name="Row"/>, <paramref name="Column"/>) of the
/// <paramref name="Scale"/> x <paramref name="Scale"/> grid, i.e. M^(k)_{i,j} of the paper (section 4.2).</summary>
public sealed record GridMask(int Scale, int Row, int Column, BinaryMask Mask);

/// <summary>Mask proposals of inference (paper section 4.2).</summary>
public static class MaskProposals
{
    /// <summary>The paper's scales K = {1, 2, 4, 8}: 1 + 4 + 16 + 64 = 85 masks.</summary>
    public static readonly IReadOnlyList<int> DefaultScales = [1, 2, 4, 8];

    /// <summary>
    /// The k x k grid masks of a <paramref name="height"/> x <paramref name="width"/> image for every k in
    /// <paramref name="scales"/>, scale by scale, row-major. Patch (i, j) covers rows [⌊i·H/k⌋, ⌊(i+1)·H/k⌋) and columns
    /// [⌊j·W/k⌋, ⌊(j+1)·W/k⌋), so the patches of one scale tile the image exactly even when k does not divide H or W.
    /// </summary>
    /// <exception cref="ArgumentException">a scale &lt; 1 or larger than the image side, or a repeated scale.</exception>
    public static IReadOnlyList<GridMask> Grid(int height, int width, IReadOnlyList<int>? scales = null)
    {
        scales ??= DefaultScales;
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        if (scales.Distinct().Count() != scales.Count) throw new ArgumentException($"repeated scale in [{string.Join(", ", scales)}]");
        var masks = new List<GridMask>();
        foreach (int k in scales)
        {
            if (k < 1 || k > Math.Min(height, width))
                throw new ArgumentException($"grid scale {k} must be in [1, {Math.Min(height, width)}] for a {height}x{width} image");
            for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
            {
                int y0 = i * height / k, y1 = (i + 1) * height / k, x0 = j * width / k, x1 = (j + 1) * width / k;
                var data = new byte[height * width];
                for (int y = y0; y < y1; y++) Array.Fill(data, (byte)1, y * width + x0, x1 - x0);
                masks.Add(new GridMask(k, i, j, new BinaryMask(width, height, data)));
            }
        }
        return masks;
    }
}
