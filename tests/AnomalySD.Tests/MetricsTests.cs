using System.Text.Json;
using AnomalySD.Metrics;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

public sealed class MetricsTests
{
    private const double Tol = 1e-9;
    private readonly ITestOutputHelper _out;

    public MetricsTests(ITestOutputHelper output) => _out = output;

    private void Near(string name, double expected, double actual, double tol = Tol)
    {
        _out.WriteLine($"{name}: actual {actual:R}  expected {expected:R}  |diff| {Math.Abs(actual - expected):E2}");
        Assert.True(Math.Abs(actual - expected) <= tol, $"{name}: actual {actual:R}, expected {expected:R}");
    }

    // ---------------- golden ----------------

    [Theory]
    [InlineData("image_continuous")]
    [InlineData("image_tied")]
    public void ImageMetricsMatchGolden(string key)
    {
        JsonElement g = GoldenJson.Metrics.GetProperty(key);
        int[] labels = GoldenJson.Ints(g.GetProperty("labels"));
        double[] scores = GoldenJson.Doubles(g.GetProperty("scores"));
        var auroc = new ImageAuroc();
        var ap = new AveragePrecision();
        var f1 = new F1Max();
        // feed in uneven batches, anomalib style
        for (int start = 0; start < scores.Length; start += 17)
        {
            int len = Math.Min(17, scores.Length - start);
            foreach (ImageScoreMetric m in new ImageScoreMetric[] { auroc, ap, f1 })
                m.Update(scores.AsSpan(start, len), labels.AsSpan(start, len));
        }
        Assert.Equal(scores.Length, auroc.Count);
        Near($"{key}.auroc", g.GetProperty("auroc").GetDouble(), auroc.Compute());
        Near($"{key}.ap", g.GetProperty("ap").GetDouble(), ap.Compute());
        Near($"{key}.f1_max", g.GetProperty("f1_max").GetDouble(), f1.Compute());
    }

    private static (float[][] Maps, byte[][] Masks, int H, int W) GoldenPixel()
    {
        JsonElement p = GoldenJson.Metrics.GetProperty("pixel");
        int[] shape = GoldenJson.Ints(p.GetProperty("shape"));
        var maps = p.GetProperty("maps").EnumerateArray()
            .Select(m => GoldenJson.Flat2D(m, out _, out _).Select(v => (float)v).ToArray()).ToArray();
        var masks = p.GetProperty("masks").EnumerateArray()
            .Select(m => GoldenJson.Flat2D(m, out _, out _).Select(v => (byte)v).ToArray()).ToArray();
        Assert.Equal(shape[0], maps.Length);
        Assert.All(maps, m => Assert.Equal(shape[1] * shape[2], m.Length));
        return (maps, masks, shape[1], shape[2]);
    }

    [Theory]
    [InlineData(PixelScoreMetric.DefaultChunkCapacity)]
    [InlineData(100)] // many chunks: exercises the k-way merge across chunks
    [InlineData(1)]
    public void PixelMetricsMatchGolden(int chunk)
    {
        JsonElement p = GoldenJson.Metrics.GetProperty("pixel");
        var (maps, masks, h, w) = GoldenPixel();
        var auroc = new PixelAuroc(chunk);
        var ap = new PixelAveragePrecision(chunk);
        var f1 = new PixelF1Max(chunk);
        var pro = new PixelPro(0.3, chunk);
        for (int i = 0; i < maps.Length; i++)
        {
            auroc.Update(maps[i], masks[i]);
            ap.Update(maps[i], masks[i]);
            f1.Update(maps[i], masks[i]);
            pro.Update(maps[i], masks[i], h, w);
        }
        _out.WriteLine($"chunk {chunk}, {auroc.Count} pixels, {pro.RegionCount} regions");
        Near("pixel_auroc", p.GetProperty("pixel_auroc").GetDouble(), auroc.Compute());
        Near("pixel_ap", p.GetProperty("pixel_ap").GetDouble(), ap.Compute());
        Near("pixel_f1_max", p.GetProperty("pixel_f1_max").GetDouble(), f1.Compute());
        Near("pro_0.3", p.GetProperty("pro_0.3").GetDouble(), pro.Compute());
        Near("pro_1.0", p.GetProperty("pro_1.0").GetDouble(), pro.Compute(1.0));
    }

    [Fact]
    public void GoldenProMatchesBruteForceMvtecReference()
    {
        var (maps, masks, h, w) = GoldenPixel();
        var pro = new PixelPro();
        foreach (var (m, k) in maps.Zip(masks)) pro.Update(m, k, h, w);
        foreach (double limit in new[] { 0.3, 0.05, 0.5, 1.0 })
            Near($"pro@{limit} vs brute force", BruteForcePro(maps, masks, h, w, limit), pro.Compute(limit), 1e-12);
    }

    // ---------------- hand-computed cases ----------------

    [Fact]
    public void FourSampleExampleByHand()
    {
        // scores 0.1 0.4 0.35 0.8, labels 0 0 1 1 (the scikit-learn docs example).
        // AUROC: positive/negative pairs (0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4) -> 3 of 4 = 0.75.
        // PR points (desc thresholds): 0.8: P=1 R=.5; 0.4: P=.5 R=.5; 0.35: P=2/3 R=1; 0.1: P=.5 R=1.
        // AP = .5*1 + 0 + .5*(2/3) = 5/6.  F1 = 2tp/(tp+fp+P): 2/3, 1/2, 4/5, 2/3 -> max 0.8.
        double[] s = { 0.1, 0.4, 0.35, 0.8 };
        int[] y = { 0, 0, 1, 1 };
        Near("auroc", 0.75, Compute(new ImageAuroc(), s, y), 1e-15);
        Near("ap", 5.0 / 6.0, Compute(new AveragePrecision(), s, y), 1e-15);
        Near("f1", 0.8, Compute(new F1Max(), s, y), 1e-15);
    }

    [Fact]
    public void TiesAreGroupedByHand()
    {
        // scores 2 1 1 0, labels 1 1 0 0. Pairs: (2 vs 1)=1, (2 vs 0)=1, (1 vs 1 tie)=0.5, (1 vs 0)=1 -> 3.5/4.
        // Ungrouped ties would give 1.0 or 0.75 depending on the order.
        // PR: t=2: P=1 R=.5; t=1 (group): tp=2 fp=1 P=2/3 R=1 -> AP = .5 + .5*2/3 = 5/6.
        double[] s = { 2, 1, 1, 0 };
        int[] y = { 1, 1, 0, 0 };
        Near("auroc", 0.875, Compute(new ImageAuroc(), s, y), 1e-15);
        Near("ap", 5.0 / 6.0, Compute(new AveragePrecision(), s, y), 1e-15);
        // -0.0 and 0.0 are the same threshold
        Near("signed zero tie", 0.5, Compute(new ImageAuroc(), new[] { -0.0, 0.0 }, new[] { 1, 0 }), 0);
    }

    [Fact]
    public void UndefinedOrInvalidInputsThrow()
    {
        Assert.Throws<InvalidOperationException>(() => Compute(new ImageAuroc(), new[] { 0.1, 0.2 }, new[] { 1, 1 }));
        Assert.Throws<InvalidOperationException>(() => Compute(new AveragePrecision(), new[] { 0.1, 0.2 }, new[] { 0, 0 }));
        Assert.Throws<ArgumentException>(() => new ImageAuroc().Update(new[] { 0.1 }, new[] { 2 }));
        Assert.Throws<ArgumentException>(() => new ImageAuroc().Update(new[] { double.NaN }, new[] { 1 }));
        Assert.Throws<ArgumentException>(() => new PixelAuroc().Update(new[] { 0.1f, 0.2f }, new byte[] { 1 }));
        var pro = new PixelPro();
        pro.Update(new[] { 0.1f, 0.2f }, new byte[] { 0, 0 }, 1, 2);
        Assert.Throws<InvalidOperationException>(() => pro.Compute());
        Assert.Throws<ArgumentOutOfRangeException>(() => new PixelPro(0));
    }

    [Fact]
    public void ResetDiscardsSamples()
    {
        var m = new ImageAuroc();
        m.Update(new[] { 0.9, 0.1 }, new[] { 0, 1 });
        m.Reset();
        m.Update(new[] { 0.9, 0.1 }, new[] { 1, 0 });
        Assert.Equal(1.0, m.Compute());
    }

    [Fact]
    public void ProOfSingle2x2RegionByHand()
    {
        // 4x4 map, ground-truth region = top-left 2x2 (area 4), 12 normal pixels.
        // Region scores .9 .8 / .3 .2; one normal pixel at .5, the other 11 at .1.
        // Curve (FPR, PRO): t=.9 (0,.25), .8 (0,.5), .5 (1/12,.5), .3 (1/12,.75), .2 (1/12,1), .1 (1,1).
        // Area to 0.3: .5*(1/12) + 1*(0.3 - 1/12) = 0.3 - 1/24  -> /0.3 = 31/36.
        // Area to 1.0: 1/24 + (1 - 1/12) = 23/24.
        float[] map =
        {
            .9f, .8f, .5f, .1f,
            .3f, .2f, .1f, .1f,
            .1f, .1f, .1f, .1f,
            .1f, .1f, .1f, .1f,
        };
        byte[] mask =
        {
            1, 1, 0, 0,
            1, 1, 0, 0,
            0, 0, 0, 0,
            0, 0, 0, 0,
        };
        var pro = new PixelPro();
        pro.Update(map, mask, 4, 4);
        Assert.Equal(1, pro.RegionCount);
        Near("pro@0.3", 31.0 / 36.0, pro.Compute(), 1e-15);
        Near("pro@1.0", 23.0 / 24.0, pro.Compute(1.0), 1e-15);
    }

    [Fact]
    public void ProInterpolatesAtTheLimitAndGroupsTies()
    {
        // 1x4 image, mask 1 0 0 0 (one region of area 1, 3 normal pixels); scores .4 | .9 .5 .4.
        // The region pixel ties with a normal pixel at .4, so both enter at the same threshold:
        // curve (0,0) (1/3,0) (2/3,0) (1,1). At limit .8: PRO(.8) = 3*(.8-2/3) = .4,
        // area = .5*.4*(2/15) = 2/75, /.8 = 1/30. At 1.0: .5*1*(1/3) = 1/6. At .3: 0.
        // (Ungrouped, region first, the curve would jump to (2/3,1) and give 1/3 at 1.0.)
        var pro = new PixelPro();
        pro.Update(new[] { .4f, .9f, .5f, .4f }, new byte[] { 255, 0, 0, 0 }, 1, 4);
        Near("pro@0.8", 1.0 / 30.0, pro.Compute(0.8), 1e-15);
        Near("pro@1.0", 1.0 / 6.0, pro.Compute(1.0), 1e-15);
        Near("pro@0.3", 0.0, pro.Compute(0.3), 0);
    }

    [Fact]
    public void RegionsAreEightConnected()
    {
        byte[] mask =
        {
            1, 0, 0, 1,
            0, 1, 0, 0,
            0, 0, 0, 1,
        };
        var labels = new int[12];
        Assert.Equal(3, ConnectedComponents.Label8(mask, 3, 4, labels));
        Assert.Equal(new[] { 1, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 3 }, labels);

        // PRO counts the diagonal pair as one region of area 2: with only (0,0) detected at FPR 0,
        // the mean overlap is (1/2 + 0 + 0)/3, not (1 + 0 + 0 + 0)/4.
        float[] map = { 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
        var pro = new PixelPro(1.0);
        pro.Update(map, mask, 3, 4);
        Assert.Equal(3, pro.RegionCount);
        // curve (0,0) (0,1/6) (1,1): area = .5*(1/6+1) = 7/12
        Near("pro", 7.0 / 12.0, pro.Compute(), 1e-15);
    }

    // ---------------- cross-checks against brute force on random tied data ----------------

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void RandomTiedDataMatchesBruteForce(int seed)
    {
        var rng = new Random(seed);
        int n = 300;
        var scores = new double[n];
        var labels = new int[n];
        for (int i = 0; i < n; i++)
        {
            labels[i] = rng.NextDouble() < 0.3 ? 1 : 0;
            scores[i] = Math.Round(rng.NextDouble() * 8 + labels[i] * 2) / 4; // heavy ties
        }
        // Mann-Whitney: AUROC = P(s+ > s-) + 0.5 P(s+ = s-)
        double pairs = 0; long pos = labels.Sum(), neg = n - pos;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                if (labels[i] == 1 && labels[j] == 0)
                    pairs += scores[i] > scores[j] ? 1 : scores[i] == scores[j] ? 0.5 : 0;
        // AP / F1 straight from the definition at each distinct threshold
        var thresholds = scores.Distinct().OrderByDescending(t => t).ToArray();
        double ap = 0, prevR = 0, f1 = 0;
        foreach (double t in thresholds)
        {
            int tp = 0, fp = 0;
            for (int i = 0; i < n; i++)
                if (scores[i] >= t) { if (labels[i] == 1) tp++; else fp++; }
            double p = (double)tp / (tp + fp), r = (double)tp / pos;
            ap += (r - prevR) * p;
            prevR = r;
            if (tp > 0) f1 = Math.Max(f1, 2 * p * r / (p + r));
        }
        Near("auroc", pairs / pos / neg, Compute(new ImageAuroc(), scores, labels), 1e-12);
        Near("ap", ap, Compute(new AveragePrecision(), scores, labels), 1e-12);
        Near("f1", f1, Compute(new F1Max(), scores, labels), 1e-12);

        // The pixel metrics (float32, chunked merge) give the same on the same data.
        float[] fs = scores.Select(v => (float)v).ToArray();
        byte[] bl = labels.Select(v => (byte)v).ToArray();
        foreach (int chunk in new[] { 1, 7, 1 << 20 })
        {
            var pa = new PixelAuroc(chunk); pa.Update(fs, bl);
            var pp = new PixelAveragePrecision(chunk); pp.Update(fs, bl);
            var pf = new PixelF1Max(chunk); pf.Update(fs, bl);
            Near($"pixel auroc chunk {chunk}", pairs / pos / neg, pa.Compute(), 1e-12);
            Near($"pixel ap chunk {chunk}", ap, pp.Compute(), 1e-12);
            Near($"pixel f1 chunk {chunk}", f1, pf.Compute(), 1e-12);
        }
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    public void RandomProMatchesBruteForce(int seed)
    {
        var rng = new Random(seed);
        int h = 12, w = 10, images = 4;
        var maps = new float[images][];
        var masks = new byte[images][];
        for (int k = 0; k < images; k++)
        {
            maps[k] = new float[h * w];
            masks[k] = new byte[h * w];
            for (int b = 0; b < 3; b++) // a few random rectangles
            {
                int y0 = rng.Next(h), x0 = rng.Next(w), y1 = Math.Min(h, y0 + rng.Next(1, 4)), x1 = Math.Min(w, x0 + rng.Next(1, 4));
                for (int y = y0; y < y1; y++) for (int x = x0; x < x1; x++) masks[k][y * w + x] = 1;
            }
            for (int i = 0; i < h * w; i++)
                maps[k][i] = (float)(Math.Round(rng.NextDouble() * 20 + masks[k][i] * 6) / 8); // ties
        }
        foreach (int chunk in new[] { 1, 13, 1 << 20 })
        {
            var pro = new PixelPro(0.3, chunk);
            for (int k = 0; k < images; k++) pro.Update(maps[k], masks[k], h, w);
            foreach (double limit in new[] { 0.3, 0.1, 0.77, 1.0 })
                Near($"chunk {chunk} pro@{limit}", BruteForcePro(maps, masks, h, w, limit), pro.Compute(limit), 1e-12);
        }
    }

    // ---------------- helpers ----------------

    private static double Compute(ImageScoreMetric m, double[] s, int[] y)
    {
        m.Update(s, y);
        return m.Compute();
    }

    /// <summary>
    /// O(thresholds × pixels) PRO written after the MVTec AD evaluation code: for every distinct score t,
    /// FPR and mean region overlap of "score >= t", points (0,0)...(1,1), then its trapezoid(x, y, x_max)
    /// with bisect-based interpolation, divided by x_max. Regions via a 4-pass flood fill of its own.
    /// </summary>
    private static double BruteForcePro(float[][] maps, byte[][] masks, int h, int w, double limit)
    {
        var regions = new List<List<(int Img, int Px)>>();
        var normals = new List<(int Img, int Px)>();
        for (int k = 0; k < maps.Length; k++)
        {
            var seen = new bool[h * w];
            for (int p = 0; p < h * w; p++)
            {
                if (masks[k][p] == 0) { normals.Add((k, p)); continue; }
                if (seen[p]) continue;
                var region = new List<(int, int)>();
                var queue = new Queue<int>();
                queue.Enqueue(p); seen[p] = true;
                while (queue.Count > 0)
                {
                    int q = queue.Dequeue();
                    region.Add((k, q));
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++)
                        {
                            int yy = q / w + dy, xx = q % w + dx;
                            if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                            int r = yy * w + xx;
                            if (masks[k][r] != 0 && !seen[r]) { seen[r] = true; queue.Enqueue(r); }
                        }
                }
                regions.Add(region);
            }
        }
        var xs = new List<double> { 0 };
        var ys = new List<double> { 0 };
        foreach (float t in maps.SelectMany(m => m).Distinct().OrderByDescending(v => v))
        {
            xs.Add((double)normals.Count(p => maps[p.Img][p.Px] >= t) / normals.Count);
            ys.Add(regions.Average(r => (double)r.Count(p => maps[p.Img][p.Px] >= t) / r.Count));
        }
        xs.Add(1); ys.Add(1);

        // MVTec trapezoid(x, y, x_max)
        double correction = 0;
        if (!xs.Contains(limit))
        {
            int ins = xs.FindLastIndex(v => v <= limit) + 1; // bisect_right
            double yInterp = ys[ins - 1] + (ys[ins] - ys[ins - 1]) * (limit - xs[ins - 1]) / (xs[ins] - xs[ins - 1]);
            correction = 0.5 * (ys[ins - 1] + yInterp) * (limit - xs[ins - 1]);
        }
        double area = 0;
        for (int i = 1; i < xs.Count && xs[i] <= limit; i++)
            area += 0.5 * (ys[i] + ys[i - 1]) * (xs[i] - xs[i - 1]);
        return (area + correction) / limit;
    }
}
