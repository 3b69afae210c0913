namespace AnomalySD.Metrics;

/// <summary>
/// Connected-component labelling of binary masks with 8-connectivity (as
/// <c>scipy.ndimage.label(mask, structure=np.ones((3, 3)))</c> in the MVTec AD evaluation code).
/// </summary>
public static class ConnectedComponents
{
    /// <summary>
    /// Labels the nonzero pixels of a row-major <paramref name="height"/>×<paramref name="width"/> mask.
    /// <paramref name="labels"/> receives 0 for background and 1..n for the components, numbered in raster
    /// order of their first pixel. Returns n. Workspace: one int stack of at most height·width entries.
    /// </summary>
    public static int Label8(ReadOnlySpan<byte> mask, int height, int width, Span<int> labels)
    {
        if (height < 0 || width < 0) throw new ArgumentOutOfRangeException(nameof(height));
        int n = checked(height * width);
        if (mask.Length != n || labels.Length != n)
            throw new ArgumentException($"mask ({mask.Length}) and labels ({labels.Length}) must have {height}×{width} = {n} entries.");
        labels.Clear();
        int count = 0;
        int[]? stack = null;
        for (int start = 0; start < n; start++)
        {
            if (mask[start] == 0 || labels[start] != 0) continue;
            stack ??= new int[n];
            count++;
            int top = 0;
            stack[top++] = start;
            labels[start] = count;
            while (top > 0)
            {
                int p = stack[--top];
                int y = p / width, x = p % width;
                for (int dy = -1; dy <= 1; dy++)
                {
                    int yy = y + dy;
                    if ((uint)yy >= (uint)height) continue;
                    for (int dx = -1; dx <= 1; dx++)
                    {
                        int xx = x + dx;
                        if ((uint)xx >= (uint)width) continue;
                        int q = yy * width + xx;
                        if (mask[q] != 0 && labels[q] == 0)
                        {
                            labels[q] = count;
                            stack[top++] = q;
                        }
                    }
                }
            }
        }
        return count;
    }
}

/// <summary>
/// Per-region overlap (PRO) integrated up to a false-positive-rate limit, MVTec AD definition
/// (Bergmann et al., MVTec AD evaluation code <c>generic_util.py</c> / <c>pro_curve_util.py</c>:
/// <c>compute_pro</c> + <c>trapezoid</c>), exact over all thresholds.
/// </summary>
/// <remarks>
/// <para>Definition: the ground-truth regions are the 8-connected components of every image's mask. For a
/// threshold t (prediction = score &gt;= t; every distinct pixel score is a threshold, ties grouped),
/// PRO(t) = mean over all regions of |region ∩ predicted| / |region|, and FPR(t) = predicted normal pixels /
/// all normal pixels (normal = mask 0, over all images). The curve (0,0), (FPR_t, PRO_t) for t descending,
/// (1,1) is integrated with the trapezoid rule up to FPR = limit; when the limit falls between two points,
/// PRO is linearly interpolated at the limit and the last partial trapezoid added. The area is divided
/// by the limit, so the result is in [0, 1].</para>
/// <para>Computation: an event sweep over the pixels in descending score order; a normal pixel increments
/// the false-positive count, a defect pixel increments its region's overlap (adding 1/area to the running
/// sum of overlaps, compensated summation). A curve point is emitted after each tie group.</para>
/// <para>Memory bound: 4 bytes per normal pixel + 8 bytes per defect pixel (score + region id) + 12 bytes
/// per region, in chunks (see <see cref="PixelScoreMetric"/>); per <see cref="Update"/> call a transient
/// 8 bytes per pixel of that image for labelling. Sorting is in place per chunk.</para>
/// </remarks>
public sealed class PixelPro
{
    private readonly ChunkedScoreBuffer _normal;
    private readonly ChunkedScoreBuffer _defect; // tag = global region id
    private readonly List<int> _regionArea = new();

    /// <param name="fprLimit">Integration limit of the FPR axis, in (0, 1]; default 0.3 (MVTec AD).</param>
    /// <param name="chunkCapacity">Pixels per storage chunk (tuning only; results do not depend on it).</param>
    public PixelPro(double fprLimit = 0.3, int chunkCapacity = PixelScoreMetric.DefaultChunkCapacity)
    {
        CheckLimit(fprLimit);
        FprLimit = fprLimit;
        _normal = new ChunkedScoreBuffer(chunkCapacity, tagged: false);
        _defect = new ChunkedScoreBuffer(chunkCapacity, tagged: true);
    }

    /// <summary>The default integration limit used by <see cref="Compute()"/>.</summary>
    public double FprLimit { get; }

    /// <summary>Number of ground-truth regions seen so far.</summary>
    public int RegionCount => _regionArea.Count;

    /// <summary>
    /// Adds one image: <paramref name="map"/> and <paramref name="mask"/> are row-major
    /// <paramref name="height"/>×<paramref name="width"/>; scores finite; mask 0 = normal, nonzero = defect.
    /// Regions never span two calls.
    /// </summary>
    public void Update(ReadOnlySpan<float> map, ReadOnlySpan<byte> mask, int height, int width)
    {
        int n = checked(height * width);
        if (map.Length != n || mask.Length != n)
            throw new ArgumentException($"map ({map.Length}) and mask ({mask.Length}) must have {height}×{width} = {n} entries.");
        for (int i = 0; i < n; i++)
            if (!float.IsFinite(map[i]))
                throw new ArgumentException($"Pixel score {i} is not finite ({map[i]}).", nameof(map));
        var labels = new int[n];
        int regions = ConnectedComponents.Label8(mask, height, width, labels);
        int baseId = _regionArea.Count;
        for (int r = 0; r < regions; r++) _regionArea.Add(0);
        for (int i = 0; i < n; i++)
        {
            if (labels[i] == 0)
            {
                _normal.Add(map[i]);
            }
            else
            {
                int id = baseId + labels[i] - 1;
                _regionArea[id]++;
                _defect.Add(map[i], id);
            }
        }
    }

    /// <summary>Discards everything accumulated.</summary>
    public void Reset()
    {
        _normal.Clear();
        _defect.Clear();
        _regionArea.Clear();
    }

    /// <summary>Normalised PRO area up to <see cref="FprLimit"/>, in [0, 1].</summary>
    public double Compute() => Compute(FprLimit);

    /// <summary>Normalised PRO area up to <paramref name="fprLimit"/> in (0, 1], in [0, 1].</summary>
    /// <exception cref="InvalidOperationException">No defect region or no normal pixel was accumulated.</exception>
    public double Compute(double fprLimit)
    {
        CheckLimit(fprLimit);
        if (_regionArea.Count == 0)
            throw new InvalidOperationException("PRO is undefined without ground-truth defect regions.");
        if (_normal.Count == 0)
            throw new InvalidOperationException("PRO is undefined without normal pixels (FPR has no denominator).");

        double normals = _normal.Count;
        double regions = _regionArea.Count;
        var invArea = new double[_regionArea.Count];
        for (int r = 0; r < invArea.Length; r++) invArea[r] = 1.0 / _regionArea[r];

        var merge = new DescendingMerge(_normal, _defect);
        var area = new CompensatedSum();
        var overlapSum = new CompensatedSum(); // Σ_r overlap_r / area_r
        long fp = 0;
        double x0 = 0, y0 = 0;
        bool reachedLimit = false;
        float t = 0;

        bool next = merge.TryNext(out float s, out int stream, out int tag);
        while (next && !reachedLimit)
        {
            t = s;
            do
            {
                if (stream == 0) fp++;
                else overlapSum.Add(invArea[tag]);
                next = merge.TryNext(out s, out stream, out tag);
            } while (next && s == t);
            double x1 = fp / normals;
            double y1 = Math.Min(overlapSum.Value / regions, 1.0);
            reachedLimit = AddSegment(ref area, x0, y0, x1, y1, fprLimit);
            x0 = x1;
            y0 = y1;
        }
        if (!reachedLimit)
            AddSegment(ref area, x0, y0, 1.0, 1.0, fprLimit); // the appended (1,1) point
        return area.Value / fprLimit;
    }

    /// <summary>Adds the trapezoid (x0,y0)-(x1,y1) clipped at the limit; true once the limit is reached.</summary>
    private static bool AddSegment(ref CompensatedSum area, double x0, double y0, double x1, double y1, double limit)
    {
        if (x1 <= limit)
        {
            area.Add(0.5 * (y0 + y1) * (x1 - x0));
            return x1 == limit;
        }
        // x0 < limit < x1 (x0 == limit would have stopped the sweep): interpolate PRO at the limit.
        double yLimit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0);
        area.Add(0.5 * (y0 + yLimit) * (limit - x0));
        return true;
    }

    private static void CheckLimit(double fprLimit)
    {
        if (!(fprLimit > 0 && fprLimit <= 1))
            throw new ArgumentOutOfRangeException(nameof(fprLimit), fprLimit, "The FPR limit must be in (0, 1].");
    }
}
