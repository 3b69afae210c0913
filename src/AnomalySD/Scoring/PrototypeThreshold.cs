namespace AnomalySD.Scoring;

/// <summary>
/// The threshold r of the prototype-guided mask (paper eq. 15): r = argmin_r Var({E ≥ r}) + Var({E &lt; r}).
/// </summary>
/// <remarks>
/// Candidates r are the distinct values of E except the smallest (so both sets are non-empty); variances are
/// population variances (divide by the set size); on ties of the objective the smallest r wins. This is the
/// rule of <c>shared/golden/README.md</c>. The mask itself is I(E &gt; r) (strictly greater, eq. 15), see
/// <see cref="Mask"/>; note the split uses E ≥ r, so the element equal to r is in the upper set of the
/// objective but not in the mask.
/// Cost O(n log n): one sort, then prefix (forward) and suffix (backward) Welford accumulations, which give
/// each set's sum of squared deviations without the cancellation of Σx² − (Σx)²/n.
/// </remarks>
public static class PrototypeThreshold
{
    /// <summary>
    /// Selects r over the values of <paramref name="errors"/> (any finite reals, any layout, e.g. the H'×W'
    /// error map E of eq. 14). If E has a single distinct value there is no candidate; that value is
    /// returned, so I(E &gt; r) is empty.
    /// </summary>
    public static double Select(ReadOnlySpan<double> errors)
    {
        if (errors.IsEmpty) throw new ArgumentException("The error map is empty.", nameof(errors));
        var v = errors.ToArray();
        foreach (double e in v)
            if (!double.IsFinite(e)) throw new ArgumentException($"Error value {e} is not finite.", nameof(errors));
        Array.Sort(v);
        int n = v.Length;

        // m2Prefix[i] = Σ (x - mean)^2 over v[0..i), m2Suffix[i] = same over v[i..n).
        var m2Prefix = new double[n + 1];
        double mean = 0, m2 = 0;
        for (int i = 0; i < n; i++)
        {
            double d = v[i] - mean;
            mean += d / (i + 1);
            m2 += d * (v[i] - mean);
            m2Prefix[i + 1] = m2;
        }
        var m2Suffix = new double[n + 1];
        mean = 0; m2 = 0;
        for (int i = n - 1; i >= 0; i--)
        {
            int k = n - i;
            double d = v[i] - mean;
            mean += d / k;
            m2 += d * (v[i] - mean);
            m2Suffix[i] = m2;
        }

        double bestR = v[0], bestObjective = double.PositiveInfinity;
        for (int i = 1; i < n; i++)
        {
            if (v[i] == v[i - 1]) continue; // i = first index of a distinct value r = v[i]; {E < r} = v[0..i)
            double objective = m2Prefix[i] / i + m2Suffix[i] / (n - i);
            if (objective < bestObjective)
            {
                bestObjective = objective;
                bestR = v[i];
            }
        }
        return bestR;
    }

    /// <summary>Eq. 15 threshold over a map.</summary>
    public static double Select(Map2D errors) => Select(errors.Data);

    /// <summary>
    /// The binary map I(E &gt; r) of eq. 15 (1.0 / 0.0), nearest-neighbour upsampled to
    /// <paramref name="height"/>×<paramref name="width"/> (source index floor(dst · in / out), as PyTorch
    /// <c>interpolate(mode="nearest")</c>); pass E's own size for no upsampling.
    /// </summary>
    public static Map2D Mask(Map2D errors, double r, int height, int width)
    {
        var m = new Map2D(height, width);
        for (int y = 0; y < height; y++)
        {
            int sy = (int)((long)y * errors.Height / height);
            for (int x = 0; x < width; x++)
            {
                int sx = (int)((long)x * errors.Width / width);
                m.Data[y * width + x] = errors[sy, sx] > r ? 1.0 : 0.0;
            }
        }
        return m;
    }
}
