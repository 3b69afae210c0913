namespace AnomalySD.Metrics;

/// <summary>
/// Neumaier (improved Kahan) compensated summation in double precision. The error of the result is
/// about one ulp of the true sum, independent of the number of terms, which keeps sweep-based metrics
/// over 10^8 pixels within the 1e-9 tolerance of the golden values.
/// </summary>
internal struct CompensatedSum
{
    private double _sum;
    private double _compensation;

    public void Add(double value)
    {
        double t = _sum + value;
        if (Math.Abs(_sum) >= Math.Abs(value))
            _compensation += (_sum - t) + value;
        else
            _compensation += (value - t) + _sum;
        _sum = t;
    }

    public readonly double Value => _sum + _compensation;
}
