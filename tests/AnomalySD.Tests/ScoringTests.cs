using System.Text.Json;
using AnomalySD.Scoring;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

public sealed class ScoringTests
{
    private readonly ITestOutputHelper _out;

    public ScoringTests(ITestOutputHelper output) => _out = output;

    private static Map2D Map(JsonElement rows)
    {
        double[] data = GoldenJson.Flat2D(rows, out int h, out int w);
        return new Map2D(h, w, data);
    }

    private double MaxAbsDiff(string name, Map2D expected, Map2D actual)
    {
        Assert.Equal(expected.Height, actual.Height);
        Assert.Equal(expected.Width, actual.Width);
        double worst = 0;
        int at = 0;
        for (int i = 0; i < expected.Data.Length; i++)
        {
            double d = Math.Abs(expected.Data[i] - actual.Data[i]);
            if (!(d <= worst)) { worst = d; at = i; }
        }
        _out.WriteLine($"{name}: max |diff| {worst:E2} at {at}: actual {actual.Data[at]:R} expected {expected.Data[at]:R}");
        return worst;
    }

    // ---------------- golden ----------------

    [Fact]
    public void Eq15ThresholdMatchesGoldenExactly()
    {
        JsonElement g = GoldenJson.Metrics.GetProperty("threshold_eq15");
        Map2D e = Map(g.GetProperty("E"));
        double expected = g.GetProperty("r").GetDouble();
        double actual = PrototypeThreshold.Select(e);
        _out.WriteLine($"r: actual {actual:R} expected {expected:R}");
        Assert.Equal(expected, actual);
        Assert.Equal(BruteForceThreshold(e.Data), actual);
    }

    [Fact]
    public void FusionMatchesGolden()
    {
        JsonElement g = GoldenJson.Metrics.GetProperty("fusion");
        var scales = g.GetProperty("S_k").EnumerateArray().Select(Map).ToList();
        Map2D pg = Map(g.GetProperty("S_pg"));
        double alpha = g.GetProperty("alpha").GetDouble();
        Assert.Equal(ScoreFusion.DefaultAlpha, alpha);

        Map2D ms = ScoreFusion.HarmonicMean(scales);
        Assert.True(MaxAbsDiff("S_ms", Map(g.GetProperty("S_ms")), ms) <= 1e-9);
        Map2D map = ScoreFusion.Fuse(ms, pg, alpha);
        Assert.True(MaxAbsDiff("S_map", Map(g.GetProperty("S_map")), map) <= 1e-9);

        var score = ScoreFusion.Score(scales, pg);
        Assert.True(MaxAbsDiff("Score().Map", Map(g.GetProperty("S_map")), score.Map) <= 1e-9);
        Assert.Equal(score.SmoothedMap.Max(), score.ImageScore);
        Assert.Equal(GaussianSmoothing.Blur(score.Map).Data, score.SmoothedMap.Data);
    }

    // ---------------- eq. 15 by hand ----------------

    [Fact]
    public void Eq15ThresholdByHand()
    {
        // E = 0 0 1 10 11. r=1: 0 + Var{1,10,11} = 182/9 ≈ 20.2; r=10: Var{0,0,1} + Var{10,11} = 2/9 + 1/4 ≈ 0.47;
        // r=11: Var{0,0,1,10} ≈ 17.7 + 0. -> r = 10.
        Assert.Equal(10.0, PrototypeThreshold.Select(new double[] { 11, 0, 10, 1, 0 }));
        // E = 0 1 2: r=1: 0 + Var{1,2}=1/4; r=2: Var{0,1}=1/4 + 0 -> exact tie, the smaller r wins.
        Assert.Equal(1.0, PrototypeThreshold.Select(new double[] { 2, 1, 0 }));
        // A single distinct value: no candidate; that value is returned (empty mask).
        Assert.Equal(3.0, PrototypeThreshold.Select(new double[] { 3, 3, 3 }));
        Assert.Throws<ArgumentException>(() => PrototypeThreshold.Select(ReadOnlySpan<double>.Empty));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Eq15ThresholdMatchesBruteForce(int seed)
    {
        var rng = new Random(seed);
        var e = new double[200];
        for (int i = 0; i < e.Length; i++)
            e[i] = rng.NextDouble() < 0.2 ? 3 + rng.NextDouble() : Math.Round(rng.NextDouble(), 2);
        Assert.Equal(BruteForceThreshold(e), PrototypeThreshold.Select(e));
    }

    [Fact]
    public void Eq15MaskIsStrictlyGreaterAndUpsampledNearest()
    {
        var e = new Map2D(2, 2, new double[] { 1, 5, 3, 7 });
        Map2D m = PrototypeThreshold.Mask(e, 5, 4, 4);
        Assert.Equal(new double[]
        {
            0, 0, 0, 0,
            0, 0, 0, 0,
            0, 0, 1, 1,
            0, 0, 1, 1,
        }, m.Data);
    }

    // ---------------- eq. 18-21 by hand ----------------

    [Fact]
    public void ScaleScoreSumsMaskedDistances()
    {
        // two complementary patch masks on a 1x4 map: S = D1 on patch 1, D2 on patch 2.
        var m1 = new Map2D(1, 4, new double[] { 1, 1, 0, 0 });
        var m2 = new Map2D(1, 4, new double[] { 0, 0, 1, 1 });
        var d1 = new Map2D(1, 4, new double[] { 1, 2, 3, 4 });
        var d2 = new Map2D(1, 4, new double[] { 10, 20, 30, 40 });
        Assert.Equal(new double[] { 1, 2, 30, 40 }, ScoreFusion.ScaleScore(new[] { m1, m2 }, new[] { d1, d2 }).Data);
        Assert.Equal(new double[] { 0, 0, 30, 40 }, ScoreFusion.PrototypeScore(m2, d2).Data);
    }

    [Fact]
    public void HarmonicMeanByHandWithZeroGuard()
    {
        // pixel 0: 3 / (1 + 1/2 + 1/4) = 12/7; pixel 1: a zero scale gives 0; pixel 2: all equal -> that value.
        var a = new Map2D(1, 3, new double[] { 1, 5, 2 });
        var b = new Map2D(1, 3, new double[] { 2, 0, 2 });
        var c = new Map2D(1, 3, new double[] { 4, 5, 2 });
        double[] ms = ScoreFusion.HarmonicMean(new[] { a, b, c }).Data;
        Assert.Equal(12.0 / 7.0, ms[0], 15);
        Assert.Equal(0.0, ms[1]);
        Assert.Equal(2.0, ms[2], 15);
        Assert.Throws<ArgumentException>(() => ScoreFusion.HarmonicMean(new[] { new Map2D(1, 1, new double[] { -1 }) }));
        // eq. 21: 0.9*2 + 0.1*12 = 3
        var fused = ScoreFusion.Fuse(new Map2D(1, 1, new double[] { 2 }), new Map2D(1, 1, new double[] { 12 }));
        Assert.Equal(3.0, fused.Data[0], 14);
    }

    // ---------------- Gaussian smoothing ----------------

    [Fact]
    public void KernelHasScipyRadiusAndIsNormalised()
    {
        double[] k = GaussianSmoothing.Kernel(4);
        Assert.Equal(33, k.Length); // radius int(4*4 + 0.5) = 16
        Assert.Equal(1.0, k.Sum(), 14);
        double z = Enumerable.Range(-16, 33).Sum(x => Math.Exp(-x * x / 32.0));
        Assert.Equal(1 / z, k[16], 15);
        Assert.Equal(Math.Exp(-1.0 / 32) / z, k[17], 15);
        Assert.Equal(9, GaussianSmoothing.Kernel(1.1).Length); // int(4.4 + 0.5) = 4
    }

    [Fact]
    public void ReflectIsHalfSampleSymmetric()
    {
        // n = 4, extension: d c b a | a b c d | d c b a | a b c d
        int[] expected = { 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3 }; // i = -4..11
        for (int i = -4; i < 12; i++) Assert.Equal(expected[i + 4], GaussianSmoothing.Reflect(i, 4));
    }

    [Fact]
    public void BlurOfConstantStaysConstant()
    {
        // smaller than the kernel radius, so the reflection wraps several times
        var m = new Map2D(7, 5, Enumerable.Repeat(2.5, 35).ToArray());
        Map2D b = GaussianSmoothing.Blur(m);
        Assert.All(b.Data, v => Assert.Equal(2.5, v, 12));
    }

    [Theory]
    [InlineData(40, 40, 20, 20)]
    [InlineData(40, 40, 0, 0)]
    [InlineData(5, 9, 1, 8)]
    public void BlurOfImpulseSumsToOne(int h, int w, int y0, int x0)
    {
        var m = new Map2D(h, w);
        m[y0, x0] = 1;
        Map2D b = GaussianSmoothing.Blur(m);
        double sum = b.Data.Sum();
        _out.WriteLine($"{h}x{w} impulse at ({y0},{x0}): sum {sum:R}");
        Assert.Equal(1.0, sum, 12);
        if (h == 40 && y0 == 20)
        {
            // away from the border the response is the separable kernel k[dy] k[dx]
            double z = Enumerable.Range(-16, 33).Sum(x => Math.Exp(-x * x / 32.0));
            Assert.Equal(1 / (z * z), b[20, 20], 15);
            Assert.Equal(Math.Exp(-(9 + 16) / 32.0) / (z * z), b[23, 16], 15);
        }
    }

    [Fact]
    public void BlurMatchesDirectTwoDimensionalSumWithMirroredPadding()
    {
        var rng = new Random(5);
        int h = 6, w = 11;
        var m = new Map2D(h, w, Enumerable.Range(0, h * w).Select(_ => rng.NextDouble()).ToArray());
        Map2D b = GaussianSmoothing.Blur(m, 2.0); // radius 8 > h: multiple reflections
        double[] k = GaussianSmoothing.Kernel(2.0);
        int r = k.Length / 2;
        int[] rows = MirrorPad(h, r), cols = MirrorPad(w, r);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double acc = 0;
                for (int dy = -r; dy <= r; dy++)
                    for (int dx = -r; dx <= r; dx++)
                        acc += k[dy + r] * k[dx + r] * m[rows[y + dy + r], cols[x + dx + r]];
                Assert.Equal(acc, b[y, x], 12);
            }
    }

    // ---------------- helpers ----------------

    /// <summary>
    /// Source index of positions -r..n-1+r under half-sample mirroring (numpy.pad mode="symmetric"), built as a
    /// walk that bounces off each end, repeating the edge sample (independent of GaussianSmoothing.Reflect).
    /// </summary>
    private static int[] MirrorPad(int n, int r)
    {
        var right = new List<int>();
        for (int idx = 0, dir = 1, p = 0; p < n + r; p++)
        {
            right.Add(idx);
            int next = idx + dir;
            if (next < 0 || next >= n) dir = -dir; else idx = next;
        }
        var left = new List<int>(); // positions -1, -2, ..., -r
        for (int idx = 0, dir = 1, p = 0; p < r; p++)
        {
            left.Add(idx);
            int next = idx + dir;
            if (next < 0 || next >= n) dir = -dir; else idx = next;
        }
        left.Reverse();
        return left.Concat(right).ToArray();
    }

    /// <summary>O(n²) eq. 15: two-pass population variances for every candidate r, first minimum wins.</summary>
    private static double BruteForceThreshold(double[] e)
    {
        static double Var(List<double> s)
        {
            double mean = s.Average();
            return s.Sum(v => (v - mean) * (v - mean)) / s.Count;
        }
        var candidates = e.Distinct().OrderBy(v => v).Skip(1);
        double best = double.PositiveInfinity, bestR = double.NaN;
        foreach (double r in candidates)
        {
            double obj = Var(e.Where(v => v >= r).ToList()) + Var(e.Where(v => v < r).ToList());
            if (double.IsNaN(bestR) || obj < best - 1e-12 * Math.Max(1, Math.Abs(best))) { best = obj; bestR = r; }
        }
        return bestR;
    }
}
