namespace AnomalySD.Scoring;

/// <summary>
/// A single-channel H×W map in double precision, row-major: element (y, x) is <c>Data[y * Width + x]</c>.
/// Used for distance maps D (eq. 17), masks M (values 0/1), score maps S^(k), S_ms, S_pg, S_map (eq. 18-21)
/// and the prototype error map E (eq. 14-15). The array is shared, not copied.
/// </summary>
public sealed class Map2D
{
    public Map2D(int height, int width, double[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (height < 1 || width < 1)
            throw new ArgumentOutOfRangeException(nameof(height), $"Map size {height}×{width} must be positive.");
        if (data.Length != (long)height * width)
            throw new ArgumentException($"Map data has {data.Length} elements, expected {height}×{width} = {(long)height * width}.", nameof(data));
        Height = height;
        Width = width;
        Data = data;
    }

    /// <summary>A zero-filled map.</summary>
    public Map2D(int height, int width) : this(height, width, new double[checked(height * width)]) { }

    public int Height { get; }
    public int Width { get; }
    public double[] Data { get; }

    public double this[int y, int x]
    {
        get => Data[y * Width + x];
        set => Data[y * Width + x] = value;
    }

    /// <summary>Builds a map from rows (all rows must have the same length).</summary>
    public static Map2D FromRows(IReadOnlyList<IReadOnlyList<double>> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new ArgumentException("No rows.", nameof(rows));
        int h = rows.Count, w = rows[0].Count;
        var data = new double[checked(h * w)];
        for (int y = 0; y < h; y++)
        {
            if (rows[y].Count != w) throw new ArgumentException($"Row {y} has {rows[y].Count} values, expected {w}.", nameof(rows));
            for (int x = 0; x < w; x++) data[y * w + x] = rows[y][x];
        }
        return new Map2D(h, w, data);
    }

    /// <summary>The maximum element (the image score of eq. 21's S_map, or of its smoothed version).</summary>
    public double Max()
    {
        double m = double.NegativeInfinity;
        foreach (double v in Data)
        {
            if (double.IsNaN(v)) return double.NaN;
            if (v > m) m = v;
        }
        return m;
    }

    /// <summary>Bilinear resize (align_corners = false, edge clamped), as torch.nn.functional.interpolate(mode="bilinear"): E to the analysis resolution, maps to the evaluation resolution.</summary>
    public static Map2D ResizeBilinear(Map2D src, int height, int width)
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

    internal void RequireSameShape(Map2D other, string name)
    {
        if (other.Height != Height || other.Width != Width)
            throw new ArgumentException($"{name} is {other.Height}×{other.Width}, expected {Height}×{Width}.", name);
    }
}
