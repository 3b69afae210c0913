namespace AnomalySD.Metrics;

/// <summary>
/// Accumulates the ROC and precision-recall curves of a binary score in one sweep over the distinct
/// thresholds in descending order. <see cref="Step"/> is called once per distinct score value t with the
/// number of positives (dTp) and negatives (dFp) whose score equals t, so after the call the counts are
/// those of the prediction "score &gt;= t" (scikit-learn <c>_binary_clf_curve</c> semantics: ties grouped).
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>AUROC (sklearn <c>roc_auc_score</c>): trapezoid rule over the ROC points (0,0), (FPR_t, TPR_t)...,
/// (1,1). Twice the area times P*N is an integer, Σ dFp·(tp_prev + tp), which is accumulated exactly in
/// <see cref="Int128"/> and divided once at the end.</item>
/// <item>AP (sklearn <c>average_precision_score</c>): Σ_n (R_n − R_{n−1}) P_n over the distinct thresholds,
/// with P_n = tp/(tp+fp), R_n = tp/P.</item>
/// <item>F1-max: max over distinct thresholds of 2PR/(P+R) = 2·tp/(tp+fp+P) (sklearn
/// <c>precision_recall_curve</c> points; a threshold with tp = 0 has F1 = 0).</item>
/// </list>
/// </remarks>
internal sealed class BinaryCurveAccumulator
{
    private readonly long _positives;
    private readonly long _negatives;
    private long _tp;
    private long _fp;
    private Int128 _twiceAucTimesPn;
    private CompensatedSum _apTimesP;
    private double _bestF1;

    public BinaryCurveAccumulator(long positives, long negatives)
    {
        _positives = positives;
        _negatives = negatives;
    }

    public void Step(long dTp, long dFp)
    {
        long tpPrev = _tp;
        _tp += dTp;
        _fp += dFp;
        _twiceAucTimesPn += (Int128)dFp * (tpPrev + _tp);
        if (dTp > 0)
        {
            _apTimesP.Add(dTp * ((double)_tp / (_tp + _fp)));
            double f1 = 2.0 * _tp / (_tp + _fp + _positives);
            if (f1 > _bestF1) _bestF1 = f1;
        }
    }

    public double Auroc()
    {
        RequireBothClasses("AUROC");
        Check();
        return (double)_twiceAucTimesPn / (2.0 * _positives) / _negatives;
    }

    public double AveragePrecision()
    {
        if (_positives == 0)
            throw new InvalidOperationException("Average precision is undefined without positive samples.");
        Check();
        return _apTimesP.Value / _positives;
    }

    public double F1Max()
    {
        if (_positives == 0)
            throw new InvalidOperationException("F1-max is undefined without positive samples.");
        Check();
        return _bestF1;
    }

    private void RequireBothClasses(string what)
    {
        if (_positives == 0 || _negatives == 0)
            throw new InvalidOperationException(
                $"{what} is undefined: it needs both classes (positives {_positives}, negatives {_negatives}).");
    }

    private void Check()
    {
        if (_tp != _positives || _fp != _negatives)
            throw new InvalidOperationException("Internal error: the sweep did not visit every sample.");
    }
}
