namespace AnomalySD.Metrics;

/// <summary>
/// Base of the image-level binary metrics, fed batch by batch (anomalib style): call
/// <see cref="Update"/> once per batch, <see cref="Compute"/> at the end, <see cref="Reset"/> to reuse.
/// Scores are kept in double precision (8 bytes + 1 byte label per image); <see cref="Compute"/> builds the
/// <see cref="BinaryCurve"/> of a copy once (O(n log n)) and sweeps its distinct thresholds, so results are exact on ties.
/// </summary>
public abstract class ImageScoreMetric
{
    private readonly List<double> _scores = new();
    private readonly List<byte> _labels = new();

    /// <summary>Number of samples accumulated so far.</summary>
    public int Count => _scores.Count;

    /// <summary>
    /// Adds a batch. <paramref name="scores"/>: any finite real (higher = more anomalous);
    /// <paramref name="labels"/>: same length, 0 = normal, 1 = anomalous.
    /// </summary>
    public void Update(ReadOnlySpan<double> scores, ReadOnlySpan<int> labels)
    {
        if (scores.Length != labels.Length)
            throw new ArgumentException($"scores ({scores.Length}) and labels ({labels.Length}) differ in length.");
        for (int i = 0; i < scores.Length; i++)
        {
            if (!double.IsFinite(scores[i]))
                throw new ArgumentException($"Score {i} is not finite ({scores[i]}).", nameof(scores));
            if (labels[i] is not (0 or 1))
                throw new ArgumentException($"Label {i} is {labels[i]}; labels must be 0 or 1.", nameof(labels));
        }
        for (int i = 0; i < scores.Length; i++)
        {
            _scores.Add(scores[i]);
            _labels.Add((byte)labels[i]);
        }
    }

    /// <summary>Discards every accumulated sample.</summary>
    public void Reset()
    {
        _scores.Clear();
        _labels.Clear();
    }

    /// <summary>Computes the metric over every sample accumulated since the last <see cref="Reset"/>.</summary>
    /// <exception cref="InvalidOperationException">The metric is undefined for the accumulated labels.</exception>
    public double Compute()
    {
        var curve = BinaryCurve.FromSorted(_scores.ToArray(), _labels.ToArray());
        var acc = new BinaryCurveAccumulator(curve.Positives, curve.Negatives);
        curve.Sweep(acc);
        return Finish(acc);
    }

    private protected abstract double Finish(BinaryCurveAccumulator acc);
}

/// <summary>
/// Image-level AUROC, equal to scikit-learn <c>roc_auc_score(labels, scores)</c>: the trapezoid rule over
/// the ROC curve whose points are the distinct thresholds (ties grouped), computed exactly in integer
/// arithmetic and divided once. Result in [0, 1]; needs both classes.
/// </summary>
public sealed class ImageAuroc : ImageScoreMetric
{
    private protected override double Finish(BinaryCurveAccumulator acc) => acc.Auroc();
}

/// <summary>
/// Average precision, equal to scikit-learn <c>average_precision_score(labels, scores)</c>:
/// AP = Σ_n (R_n − R_{n−1}) P_n over the distinct thresholds in descending order (no interpolation).
/// Result in [0, 1]; needs at least one positive.
/// </summary>
public sealed class AveragePrecision : ImageScoreMetric
{
    private protected override double Finish(BinaryCurveAccumulator acc) => acc.AveragePrecision();
}

/// <summary>
/// F1-max: the maximum of F1 = 2PR/(P+R) over the points of scikit-learn <c>precision_recall_curve</c>
/// (every distinct score is a threshold, prediction = score &gt;= threshold), computed as 2·tp/(tp+fp+P).
/// Result in [0, 1]; needs at least one positive. (anomalib's F1Max adds 1e-10 to the denominator; this
/// class does not.)
/// </summary>
public sealed class F1Max : ImageScoreMetric
{
    private protected override double Finish(BinaryCurveAccumulator acc) => acc.F1Max();
}
