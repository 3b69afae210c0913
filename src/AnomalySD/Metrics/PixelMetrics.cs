namespace AnomalySD.Metrics;

/// <summary>
/// Base of the exact pixel-level binary metrics over full-resolution anomaly maps, fed image by image
/// (or batch by batch, any flattening order).
/// </summary>
/// <remarks>
/// <para>Exactness: every distinct pixel score is a threshold and ties are grouped, as in scikit-learn on
/// the flattened maps; results match sklearn to ~1e-15. Scores are stored as float32 (the dtype anomaly maps
/// have), so two float64 inputs that round to the same float32 become a tie.</para>
/// <para>Memory bound: 4 bytes per accumulated pixel, and nothing else proportional to the pixel count.
/// Labels are not stored: normal and defect pixels go to two separate float32 stores, each held in chunks
/// of <c>chunkCapacity</c> floats (default 2^20 = 4 MiB), so growing never copies. <see cref="Compute"/>
/// sorts each chunk in place (introsort, O(log n) stack, no workspace) and sweeps a K-way merge of the
/// chunks (a heap of K = pixels/chunkCapacity + 2 entries). Example: 500 images of 512×512 = 131M pixels
/// → 524 MB.</para>
/// </remarks>
public abstract class PixelScoreMetric
{
    /// <summary>Default chunk size in pixels (4 MiB of float32).</summary>
    public const int DefaultChunkCapacity = 1 << 20;

    private readonly ChunkedScoreBuffer _normal;
    private readonly ChunkedScoreBuffer _defect;

    private protected PixelScoreMetric(int chunkCapacity)
    {
        _normal = new ChunkedScoreBuffer(chunkCapacity, tagged: false);
        _defect = new ChunkedScoreBuffer(chunkCapacity, tagged: false);
    }

    /// <summary>Number of pixels accumulated so far.</summary>
    public long Count => _normal.Count + _defect.Count;

    /// <summary>
    /// Adds the pixels of one or more maps. <paramref name="map"/>: anomaly scores (finite, higher = more
    /// anomalous), any flattened layout; <paramref name="mask"/>: the ground truth in the same layout,
    /// 0 = normal, nonzero = defect (so 0/1 and 0/255 masks both work).
    /// </summary>
    public void Update(ReadOnlySpan<float> map, ReadOnlySpan<byte> mask)
    {
        if (map.Length != mask.Length)
            throw new ArgumentException($"map ({map.Length}) and mask ({mask.Length}) differ in length.");
        for (int i = 0; i < map.Length; i++)
            if (!float.IsFinite(map[i]))
                throw new ArgumentException($"Pixel score {i} is not finite ({map[i]}).", nameof(map));
        for (int i = 0; i < map.Length; i++)
        {
            if (mask[i] != 0) _defect.Add(map[i]);
            else _normal.Add(map[i]);
        }
    }

    /// <summary>Discards every accumulated pixel.</summary>
    public void Reset()
    {
        _normal.Clear();
        _defect.Clear();
    }

    /// <summary>Computes the metric over all pixels accumulated since the last <see cref="Reset"/>.</summary>
    /// <exception cref="InvalidOperationException">The metric is undefined for the accumulated masks.</exception>
    public double Compute()
    {
        var acc = new BinaryCurveAccumulator(_defect.Count, _normal.Count);
        var merge = new DescendingMerge(_normal, _defect);
        bool any = false;
        float t = 0;
        long dTp = 0, dFp = 0;
        while (merge.TryNext(out float s, out int stream, out _))
        {
            if (any && s != t)
            {
                acc.Step(dTp, dFp);
                dTp = dFp = 0;
            }
            any = true;
            t = s;
            if (stream == 1) dTp++;
            else dFp++;
        }
        if (any) acc.Step(dTp, dFp);
        return Finish(acc);
    }

    private protected abstract double Finish(BinaryCurveAccumulator acc);
}

/// <summary>
/// Pixel AUROC = scikit-learn <c>roc_auc_score(masks.ravel(), maps.ravel())</c>, exact (see
/// <see cref="PixelScoreMetric"/> for the 4 bytes/pixel memory bound). Result in [0, 1].
/// </summary>
public sealed class PixelAuroc : PixelScoreMetric
{
    /// <param name="chunkCapacity">Pixels per storage chunk (tuning only; results do not depend on it).</param>
    public PixelAuroc(int chunkCapacity = DefaultChunkCapacity) : base(chunkCapacity) { }

    private protected override double Finish(BinaryCurveAccumulator acc) => acc.Auroc();
}

/// <summary>
/// Pixel AP = scikit-learn <c>average_precision_score(masks.ravel(), maps.ravel())</c>, exact (see
/// <see cref="PixelScoreMetric"/> for the 4 bytes/pixel memory bound). Result in [0, 1].
/// </summary>
public sealed class PixelAveragePrecision : PixelScoreMetric
{
    /// <param name="chunkCapacity">Pixels per storage chunk (tuning only; results do not depend on it).</param>
    public PixelAveragePrecision(int chunkCapacity = DefaultChunkCapacity) : base(chunkCapacity) { }

    private protected override double Finish(BinaryCurveAccumulator acc) => acc.AveragePrecision();
}

/// <summary>
/// Pixel F1-max over every distinct pixel score (sklearn <c>precision_recall_curve</c> points), exact (see
/// <see cref="PixelScoreMetric"/> for the 4 bytes/pixel memory bound). Result in [0, 1].
/// </summary>
public sealed class PixelF1Max : PixelScoreMetric
{
    /// <param name="chunkCapacity">Pixels per storage chunk (tuning only; results do not depend on it).</param>
    public PixelF1Max(int chunkCapacity = DefaultChunkCapacity) : base(chunkCapacity) { }

    private protected override double Finish(BinaryCurveAccumulator acc) => acc.F1Max();
}
