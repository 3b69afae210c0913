namespace AnomalySD.Data;

/// <summary>
/// Paints synthetic defects with exact masks into a planar image <c>img[c, y, x]</c> (RGB in [0, 1]) and a mask
/// <c>mask[y, x]</c>: a pixel is marked 1 where the defect covers it with an opacity above 0.5 (pixels painted more faintly
/// change but stay 0). Used by the demo dataset (<see cref="SyntheticDataset"/>) and by the calibration set.
/// </summary>
public static class DefectPainter
{
    /// <summary>A straight scratch of length 0.24 × <paramref name="size"/> and width max(1, size / 96) through (cx, cy) at <paramref name="angle"/> radians.</summary>
    public static void Scratch(float[,,] img, float[,] mask, double cx, double cy, double size, double angle, (float R, float G, float B) color)
    {
        double half = size * 0.12, width = Math.Max(1.0, size / 96.0);
        ForEachPixel(img, (y, x) =>
        {
            double px = x - cx, py = y - cy, along = px * Math.Cos(angle) + py * Math.Sin(angle), across = -px * Math.Sin(angle) + py * Math.Cos(angle);
            return Math.Abs(along) <= half && Math.Abs(across) <= width ? 1f : 0f;
        }, mask, color);
    }

    /// <summary>An opaque disc of radius <paramref name="radius"/> pixels.</summary>
    public static void Hole(float[,,] img, float[,] mask, double cx, double cy, double radius, (float R, float G, float B) color) =>
        ForEachPixel(img, (y, x) => (x - cx) * (x - cx) + (y - cy) * (y - cy) <= radius * radius ? 1f : 0f, mask, color);

    /// <summary>A soft blob: opacity 0.85 · clamp(1.5 − d / radius, 0, 1), d the distance to the centre.</summary>
    public static void Stain(float[,,] img, float[,] mask, double cx, double cy, double radius, (float R, float G, float B) color) =>
        ForEachPixel(img, (y, x) =>
        {
            double d = Math.Sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) / radius;
            return (float)(Math.Clamp(1.5 - d, 0, 1) * 0.85);
        }, mask, color);

    /// <summary>
    /// Cut-paste (CutPaste, Li et al. 2021): the <paramref name="side"/> × <paramref name="side"/> patch of <paramref name="source"/>
    /// at (sy, sx), with its brightness scaled by <paramref name="gain"/>, pasted with its top-left corner at (ty, tx). The whole
    /// patch is marked.
    /// </summary>
    public static void CutPaste(float[,,] img, float[,] mask, float[,,] source, int sy, int sx, int ty, int tx, int side, float gain)
    {
        int h = img.GetLength(1), w = img.GetLength(2);
        var patch = new float[3, side, side];
        for (int c = 0; c < 3; c++)
        for (int y = 0; y < side; y++)
        for (int x = 0; x < side; x++)
            patch[c, y, x] = Math.Clamp(source[c, Math.Clamp(sy + y, 0, source.GetLength(1) - 1), Math.Clamp(sx + x, 0, source.GetLength(2) - 1)] * gain, 0f, 1f);
        for (int y = 0; y < side; y++)
        for (int x = 0; x < side; x++)
        {
            int yy = ty + y, xx = tx + x;
            if (yy < 0 || xx < 0 || yy >= h || xx >= w) continue;
            for (int c = 0; c < 3; c++) img[c, yy, xx] = patch[c, y, x];
            mask[yy, xx] = 1;
        }
    }

    /// <summary>Gaussian noise of standard deviation <paramref name="sigma"/> inside a disc of radius <paramref name="radius"/>
    /// (opacity 1 inside 0.8 · radius, fading to 0 at radius).</summary>
    public static void NoiseBlob(float[,,] img, float[,] mask, double cx, double cy, double radius, double sigma, Random rng)
    {
        int h = img.GetLength(1), w = img.GetLength(2);
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            double d = Math.Sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) / radius;
            double alpha = Math.Clamp((1 - d) / 0.2, 0, 1);
            if (alpha <= 0) continue;
            for (int c = 0; c < 3; c++)
            {
                double g = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
                img[c, y, x] = (float)Math.Clamp(img[c, y, x] + alpha * sigma * g, 0, 1);
            }
            if (alpha > 0.5) mask[y, x] = 1;
        }
    }

    private static void ForEachPixel(float[,,] img, Func<int, int, float> opacity, float[,] mask, (float R, float G, float B) color)
    {
        int h = img.GetLength(1), w = img.GetLength(2);
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            float alpha = opacity(y, x);
            if (alpha <= 0) continue;
            img[0, y, x] = img[0, y, x] * (1 - alpha) + color.R * alpha;
            img[1, y, x] = img[1, y, x] * (1 - alpha) + color.G * alpha;
            img[2, y, x] = img[2, y, x] * (1 - alpha) + color.B * alpha;
            if (alpha > 0.5f) mask[y, x] = 1;
        }
    }
}
