namespace AnomalySD.Data;

/// <summary>
/// The foreground mask m_f of fine-tuning (paper section 4.1, "Training Mask Design"). The paper does not say how
/// m_f is obtained; this is the default for objects, chosen to need no model and to fail safe:
/// <list type="number">
/// <item>background colour = per-channel median of a border band (outer 1/16 of each side), on a copy downscaled to
/// at most 128 px;</item>
/// <item>d(p) = Euclidean RGB distance of each pixel to that colour; threshold t = Otsu's threshold of d
/// (256-bin histogram), floored at <see cref="MinContrast"/> so a uniform image does not split on noise;</item>
/// <item>3x3 majority filter (removes speckle), holes filled (pixels not 4-connected to the border through
/// background become foreground), then nearest-neighbour upsampling to the image size;</item>
/// <item>if the foreground covers less than <see cref="MinFraction"/> or more than <see cref="MaxFraction"/> of the
/// image, the whole image is foreground (the object fills the frame, or no object stands out).</item>
/// </list>
/// Textures use the whole image; user-supplied masks replace this entirely.
/// </summary>
public static class ForegroundMask
{
    public const float MinContrast = 0.08f;
    public const double MinFraction = 0.02;
    public const double MaxFraction = 0.98;
    private const int WorkSize = 128;

    /// <summary>The whole image as foreground.</summary>
    public static BinaryMask Full(int width, int height)
    {
        var data = new byte[width * height];
        Array.Fill(data, (byte)1);
        return new BinaryMask(width, height, data);
    }

    /// <summary>The automatic object mask of <paramref name="image"/> at the image's size (algorithm in the class summary).</summary>
    public static BinaryMask Compute(RgbImage image)
    {
        int w = image.Width, h = image.Height;
        int step = Math.Max(1, (Math.Max(w, h) + WorkSize - 1) / WorkSize);
        int sw = (w + step - 1) / step, sh = (h + step - 1) / step;
        // Downscaled copy (box average of step x step blocks).
        var small = new float[3, sh, sw];
        for (int c = 0; c < 3; c++)
        for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++)
        {
            float sum = 0; int n = 0;
            for (int yy = y * step; yy < Math.Min(h, (y + 1) * step); yy++)
            for (int xx = x * step; xx < Math.Min(w, (x + 1) * step); xx++) { sum += image[c, yy, xx]; n++; }
            small[c, y, x] = sum / n;
        }
        int band = Math.Max(1, Math.Min(sw, sh) / 16);
        var bg = new float[3];
        for (int c = 0; c < 3; c++)
        {
            var values = new List<float>();
            for (int y = 0; y < sh; y++)
            for (int x = 0; x < sw; x++)
                if (y < band || y >= sh - band || x < band || x >= sw - band) values.Add(small[c, y, x]);
            values.Sort();
            bg[c] = values[values.Count / 2];
        }
        var dist = new float[sh * sw];
        for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++)
        {
            float d0 = small[0, y, x] - bg[0], d1 = small[1, y, x] - bg[1], d2 = small[2, y, x] - bg[2];
            dist[y * sw + x] = MathF.Sqrt(d0 * d0 + d1 * d1 + d2 * d2);
        }
        float t = Math.Max(MinContrast, Otsu(dist));
        var fg = new byte[sh * sw];
        for (int i = 0; i < fg.Length; i++) fg[i] = dist[i] > t ? (byte)1 : (byte)0;
        fg = Majority3x3(fg, sw, sh);
        FillHoles(fg, sw, sh);

        double fraction = fg.Count(v => v != 0) / (double)fg.Length;
        if (fraction < MinFraction || fraction > MaxFraction) return Full(w, h);
        var data = new byte[w * h];
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) data[y * w + x] = fg[(y / step) * sw + x / step];
        return new BinaryMask(w, h, data);
    }

    /// <summary>Otsu's threshold of non-negative values (256 bins over [0, max]).</summary>
    internal static float Otsu(float[] values)
    {
        float max = values.Max();
        if (max <= 0) return 0;
        var hist = new double[256];
        foreach (float v in values) hist[Math.Min(255, (int)(v / max * 255))]++;
        double total = values.Length, sumAll = 0;
        for (int i = 0; i < 256; i++) sumAll += i * hist[i];
        double wB = 0, sumB = 0, best = -1; int bestI = 0;
        for (int i = 0; i < 256; i++)
        {
            wB += hist[i];
            if (wB == 0) continue;
            double wF = total - wB;
            if (wF == 0) break;
            sumB += i * hist[i];
            double mB = sumB / wB, mF = (sumAll - sumB) / wF;
            double between = wB * wF * (mB - mF) * (mB - mF);
            if (between > best) { best = between; bestI = i; }
        }
        return (bestI + 0.5f) / 255f * max;
    }

    private static byte[] Majority3x3(byte[] m, int w, int h)
    {
        var o = new byte[m.Length];
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            int on = 0, n = 0;
            for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++)
            {
                int yy = y + dy, xx = x + dx;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                on += m[yy * w + xx]; n++;
            }
            o[y * w + x] = 2 * on > n ? (byte)1 : (byte)0;
        }
        return o;
    }

    private static void FillHoles(byte[] m, int w, int h)
    {
        var reached = new bool[m.Length];
        var queue = new Queue<int>();
        void Seed(int i) { if (m[i] == 0 && !reached[i]) { reached[i] = true; queue.Enqueue(i); } }
        for (int x = 0; x < w; x++) { Seed(x); Seed((h - 1) * w + x); }
        for (int y = 0; y < h; y++) { Seed(y * w); Seed(y * w + w - 1); }
        while (queue.Count > 0)
        {
            int i = queue.Dequeue(), y = i / w, x = i % w;
            if (x > 0) Seed(i - 1);
            if (x < w - 1) Seed(i + 1);
            if (y > 0) Seed(i - w);
            if (y < h - 1) Seed(i + w);
        }
        for (int i = 0; i < m.Length; i++) if (!reached[i]) m[i] = 1;
    }
}
