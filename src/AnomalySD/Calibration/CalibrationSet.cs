using AnomalySD.Data;

namespace AnomalySD.Calibration;

/// <summary>
/// The calibration set of one category, made from its shots only (paper's conclusion: "reduce the reliance on manually set
/// prior information"). Normals are augmented copies of the shots: a small shift (up to 3 % of the side, edges replicated),
/// brightness ±0.04 and contrast ±6 %, and for textures (and objects marked rotation invariant) a random flip and a rotation
/// by a multiple of 90°. Defectives are further augmented copies with one synthetic defect each and its exact mask, the kinds in
/// turn: a scratch, a hole, a stain (<see cref="DefectPainter"/>, in a colour that contrasts with the local mean), a cut-paste
/// patch (from elsewhere in the image, or from another category's shot when one is given, brightness-jittered) and a noise
/// blob. Defects are centred on the foreground. Deterministic for a seed.
/// </summary>
public static class CalibrationSet
{
    public static readonly string[] DefectKinds = ["scratch", "hole", "stain", "cutpaste", "noise"];

    public static IReadOnlyList<CalibrationSample> Build(IReadOnlyList<RgbImage> shots, IReadOnlyList<BinaryMask> foregrounds, bool rotations,
                                                         IReadOnlyList<RgbImage> otherCategories, int normals, int defectives, int seed)
    {
        if (shots.Count == 0) throw new ArgumentException("calibration needs at least one shot");
        var rng = new Random(seed);
        var samples = new List<CalibrationSample>();
        for (int i = 0; i < normals + defectives; i++)
        {
            int k = i % shots.Count;
            var (img, fg) = Augment(shots[k], foregrounds[k], rotations, rng);
            if (i < normals)
            {
                samples.Add(new CalibrationSample(FromPlanar(img), null, "normal"));
                continue;
            }
            string kind = DefectKinds[(i - normals) % DefectKinds.Length];
            var mask = PaintDefect(kind, img, fg, otherCategories, rng);
            samples.Add(new CalibrationSample(FromPlanar(img), mask, kind));
        }
        return samples;
    }

    /// <summary>Paints one defect of <paramref name="kind"/> into <paramref name="img"/> ([3, H, W], in place) and returns its mask.</summary>
    public static BinaryMask PaintDefect(string kind, float[,,] img, bool[,] foreground, IReadOnlyList<RgbImage> others, Random rng)
    {
        int h = img.GetLength(1), w = img.GetLength(2);
        var (cy, cx) = ForegroundPoint(foreground, rng);
        double side = Math.Min(h, w);
        var mask = new float[h, w];
        switch (kind)
        {
            case "scratch": DefectPainter.Scratch(img, mask, cx, cy, side, rng.NextDouble() * Math.PI, Contrasting(img, cy, cx, rng)); break;
            case "hole": DefectPainter.Hole(img, mask, cx, cy, side * (0.025 + 0.025 * rng.NextDouble()), Contrasting(img, cy, cx, rng)); break;
            case "stain": DefectPainter.Stain(img, mask, cx, cy, side * (0.04 + 0.04 * rng.NextDouble()), Contrasting(img, cy, cx, rng)); break;
            case "cutpaste":
            {
                int patch = Math.Max(4, (int)(side * (0.06 + 0.06 * rng.NextDouble())));
                bool foreign = others.Count > 0 && rng.NextDouble() < 0.5;
                float[,,] source = foreign ? ToPlanar(others[rng.Next(others.Count)], h, w) : (float[,,])img.Clone();
                int sy = rng.Next(0, Math.Max(1, h - patch)), sx = rng.Next(0, Math.Max(1, w - patch));
                float gain = (float)(rng.NextDouble() < 0.5 ? 0.6 + 0.2 * rng.NextDouble() : 1.25 + 0.25 * rng.NextDouble());
                DefectPainter.CutPaste(img, mask, source, sy, sx, (int)cy - patch / 2, (int)cx - patch / 2, patch, gain);
                break;
            }
            case "noise": DefectPainter.NoiseBlob(img, mask, cx, cy, side * (0.03 + 0.03 * rng.NextDouble()), 0.25, rng); break;
            default: throw new ArgumentException($"unknown defect kind '{kind}' (known: {string.Join(", ", DefectKinds)})");
        }
        var data = new byte[h * w];
        for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) data[y * w + x] = mask[y, x] > 0 ? (byte)1 : (byte)0;
        return new BinaryMask(w, h, data);
    }

    private static (float[,,] Image, bool[,] Foreground) Augment(RgbImage shot, BinaryMask foreground, bool rotations, Random rng)
    {
        int h = shot.Height, w = shot.Width;
        int rot = rotations && h == w ? rng.Next(4) : 0;
        bool flip = rotations && rng.Next(2) == 1;
        int dy = (int)Math.Round((rng.NextDouble() * 2 - 1) * 0.03 * h), dx = (int)Math.Round((rng.NextDouble() * 2 - 1) * 0.03 * w);
        float gain = (float)(1 + (rng.NextDouble() * 2 - 1) * 0.06), shift = (float)((rng.NextDouble() * 2 - 1) * 0.04);
        var img = new float[3, h, w];
        var fg = new bool[h, w];
        double mean = shot.Data.Average();
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            // Output (y, x) reads the shot at the inverse transform: un-shift, un-rotate, un-flip (edges replicated).
            int sy = Math.Clamp(y - dy, 0, h - 1), sx = Math.Clamp(x - dx, 0, w - 1);
            for (int r = 0; r < rot; r++) (sy, sx) = (sx, w - 1 - sy); // inverse of a 90° counter-clockwise turn
            if (flip) sx = w - 1 - sx;
            for (int c = 0; c < 3; c++)
                img[c, y, x] = Math.Clamp((float)((shot[c, sy, sx] - mean) * gain + mean) + shift, 0f, 1f);
            fg[y, x] = foreground[sy, sx] != 0;
        }
        return (img, fg);
    }

    private static (double Y, double X) ForegroundPoint(bool[,] fg, Random rng)
    {
        int h = fg.GetLength(0), w = fg.GetLength(1);
        // Away from the border (8 %) so the defect lies inside the image; any point if the foreground offers none there.
        int my = h * 8 / 100, mx = w * 8 / 100;
        var points = new List<(int, int)>();
        for (int y = my; y < h - my; y++) for (int x = mx; x < w - mx; x++) if (fg[y, x]) points.Add((y, x));
        if (points.Count == 0) return (my + rng.NextDouble() * (h - 2 * my), mx + rng.NextDouble() * (w - 2 * mx));
        var (py, px) = points[rng.Next(points.Count)];
        return (py + 0.5, px + 0.5);
    }

    /// <summary>A colour far from the local mean (dark on bright, bright on dark), with a random hue.</summary>
    private static (float, float, float) Contrasting(float[,,] img, double cy, double cx, Random rng)
    {
        int h = img.GetLength(1), w = img.GetLength(2);
        double sum = 0;
        int n = 0;
        for (int y = Math.Max(0, (int)cy - 4); y < Math.Min(h, (int)cy + 5); y++)
        for (int x = Math.Max(0, (int)cx - 4); x < Math.Min(w, (int)cx + 5); x++) { sum += (img[0, y, x] + img[1, y, x] + img[2, y, x]) / 3; n++; }
        double local = n > 0 ? sum / n : 0.5;
        double level = local > 0.5 ? 0.05 + 0.15 * rng.NextDouble() : 0.8 + 0.15 * rng.NextDouble();
        float Tint() => (float)Math.Clamp(level + (rng.NextDouble() - 0.5) * 0.2, 0, 1);
        return (Tint(), Tint(), Tint());
    }

    private static float[,,] ToPlanar(RgbImage image, int h, int w)
    {
        var p = new float[3, h, w];
        for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            p[c, y, x] = image[c, y * image.Height / h, x * image.Width / w];
        return p;
    }

    private static RgbImage FromPlanar(float[,,] img)
    {
        int h = img.GetLength(1), w = img.GetLength(2);
        var data = new float[3 * h * w];
        for (int c = 0; c < 3; c++) for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) data[(c * h + y) * w + x] = img[c, y, x];
        return new RgbImage(w, h, data);
    }
}
