namespace AnomalySD.Metrics;

/// <summary>
/// The one sorted sweep that every binary-score consumer reads (anomalib's <c>BinaryPrecisionRecallCurve</c> feeding both
/// <c>F1Max</c> and <c>F1AdaptiveThreshold</c>): the distinct scores in descending order, each with the cumulative true and
/// false positives of the prediction "score &gt;= threshold" (scikit-learn <c>_binary_clf_curve</c>: ties grouped). AUROC, AP and
/// F1-max (<see cref="ImageScoreMetric"/>), the ROC plot (<see cref="Roc"/>) and the F1-optimal threshold
/// (<see cref="F1OptimalThreshold"/>) are views of it.
/// </summary>
public sealed class BinaryCurve
{
    private BinaryCurve(double[] thresholds, long[] tp, long[] fp, long positives, long negatives)
    {
        Thresholds = thresholds;
        TruePositives = tp;
        FalsePositives = fp;
        Positives = positives;
        Negatives = negatives;
    }

    /// <summary>Distinct scores, descending.</summary>
    public double[] Thresholds { get; }

    /// <summary>Positives with a score &gt;= <see cref="Thresholds"/>[k].</summary>
    public long[] TruePositives { get; }

    /// <summary>Negatives with a score &gt;= <see cref="Thresholds"/>[k].</summary>
    public long[] FalsePositives { get; }

    public long Positives { get; }
    public long Negatives { get; }

    /// <summary>The curve of <paramref name="scores"/> (higher = more anomalous) and <paramref name="labels"/> (true = anomalous).</summary>
    /// <exception cref="ArgumentException">different lengths.</exception>
    public static BinaryCurve From(IReadOnlyList<double> scores, IReadOnlyList<bool> labels)
    {
        if (scores.Count != labels.Count) throw new ArgumentException($"scores ({scores.Count}) and labels ({labels.Count}) differ in length");
        double[] keys = scores.ToArray();
        byte[] l = labels.Select(b => b ? (byte)1 : (byte)0).ToArray();
        return FromSorted(keys, l);
    }

    /// <summary>The curve of scores and 0/1 labels; both arrays are sorted in place (ascending).</summary>
    internal static BinaryCurve FromSorted(double[] keys, byte[] labels)
    {
        long positives = 0;
        foreach (byte b in labels) positives += b;
        Array.Sort(keys, labels); // ascending; swept from the end (descending thresholds)
        var thresholds = new List<double>();
        var tp = new List<long>();
        var fp = new List<long>();
        long t = 0, f = 0;
        for (int i = keys.Length - 1; i >= 0;)
        {
            double score = keys[i];
            for (; i >= 0 && keys[i] == score; i--)
            {
                if (labels[i] == 1) t++;
                else f++;
            }
            thresholds.Add(score);
            tp.Add(t);
            fp.Add(f);
        }
        return new BinaryCurve(thresholds.ToArray(), tp.ToArray(), fp.ToArray(), positives, labels.Length - positives);
    }

    /// <summary>ROC points (FPR, TPR) at every distinct threshold, starting at (0, 0) and ending at (1, 1); a class that is absent gives 0.</summary>
    public (double[] Fpr, double[] Tpr) Roc()
    {
        var fpr = new double[Thresholds.Length + 1];
        var tpr = new double[Thresholds.Length + 1];
        for (int k = 0; k < Thresholds.Length; k++)
        {
            fpr[k + 1] = Negatives == 0 ? 0 : FalsePositives[k] / (double)Negatives;
            tpr[k + 1] = Positives == 0 ? 0 : TruePositives[k] / (double)Positives;
        }
        return (fpr, tpr);
    }

    /// <summary>
    /// The threshold t maximising F1 of the decision "score &gt;= t" (F1 = 2·tp / (tp + fp + P)), placed halfway between the lowest
    /// score flagged and the highest score not flagged (so it generalises to unseen scores); when every score is flagged, the lowest
    /// score itself. The first (highest) of equal maxima wins. Returns (t, F1).
    /// </summary>
    /// <exception cref="ArgumentException">no positive sample.</exception>
    public (double Threshold, double F1) F1OptimalThreshold()
    {
        if (Positives == 0) throw new ArgumentException("an F1-optimal threshold needs at least one anomalous sample");
        double bestF1 = -1, bestT = Thresholds[^1];
        for (int k = 0; k < Thresholds.Length; k++)
        {
            double f1 = 2.0 * TruePositives[k] / (TruePositives[k] + FalsePositives[k] + Positives);
            if (f1 > bestF1)
            {
                bestF1 = f1;
                bestT = k + 1 < Thresholds.Length ? 0.5 * (Thresholds[k] + Thresholds[k + 1]) : Thresholds[k];
            }
        }
        return (bestT, bestF1);
    }

    /// <summary>Feeds the sweep, threshold by threshold, to an accumulator of the areas (AUROC, AP, F1-max).</summary>
    internal void Sweep(BinaryCurveAccumulator acc)
    {
        long tpPrev = 0, fpPrev = 0;
        for (int k = 0; k < Thresholds.Length; k++)
        {
            acc.Step(TruePositives[k] - tpPrev, FalsePositives[k] - fpPrev);
            (tpPrev, fpPrev) = (TruePositives[k], FalsePositives[k]);
        }
    }
}
