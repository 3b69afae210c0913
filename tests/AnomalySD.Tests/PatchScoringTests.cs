using System.Text.Json.Nodes;
using AnomalySD.Checkpoints;
using AnomalySD.Data;
using AnomalySD.Detection;
using AnomalySD.Engine;
using AnomalySD.Evaluation;
using AnomalySD.Scoring;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>The scoring options of issue 25 on the managed side: the top-k image score and the fusion rule by hand, the reference rule,
/// option parsing.</summary>
public sealed class PatchScoringRuleTests
{
    [Fact]
    public void TopKMeanByHand()
    {
        // A 10 x 10 map holding 0..99: the top 5 % is 95..99 (mean 97); ceil(3.1) = 4 pixels is 96..99 (97.5); 1 % is the max.
        var map = new Map2D(10, 10, Enumerable.Range(0, 100).Select(v => (double)((v * 37) % 100)).ToArray());
        Assert.Equal(97.0, ImageScoreRule.TopK(0.05).Apply(map), 12);
        Assert.Equal(97.5, ImageScoreRule.TopK(0.031).Apply(map), 12);
        Assert.Equal(99.0, ImageScoreRule.TopK(0.01).Apply(map), 12);
        Assert.Equal(49.5, ImageScoreRule.TopK(1).Apply(map), 12);
        Assert.Equal(99.0, ImageScoreRule.Max.Apply(map));
        // 1 % of a 256 x 256 map: ceil(655.36) = 656 pixels; 0.07 x 100 = 7.000000000000001 must stay 7.
        Assert.Equal(656, ImageScoreRule.TopK().Count(256 * 256));
        Assert.Equal(7, ImageScoreRule.TopK(0.07).Count(100));
        Assert.Equal(1, ImageScoreRule.TopK(1e-9).Count(100));
    }

    [Fact]
    public void FusionNormalisesEachMapOverTheSetThenAverages()
    {
        // E over the set: min 1, max 9 (span 8); M: min 0, max 10.
        Map2D[] e = [new(2, 2, [1, 2, 3, 4]), new(2, 2, [5, 6, 7, 9])];
        Map2D[] m = [new(2, 2, [0, 0, 0, 10]), new(2, 2, [5, 5, 5, 5])];
        var f = MutualScoring.Fuse(e, m);
        Assert.Equal([0, 0.0625, 0.125, 0.6875], f[0].Data, new ToleranceComparer(1e-15)); // ((e-1)/8 + m/10)/2
        Assert.Equal([0.5, 0.5625, 0.625, 0.75], f[1].Data, new ToleranceComparer(1e-15));
        // A kind that is constant over the set adds nothing: F = normalised E / 2.
        var flat = MutualScoring.Fuse(e, [new(2, 2, [3, 3, 3, 3]), new(2, 2, [3, 3, 3, 3])]);
        Assert.Equal([0.25, 0.3125, 0.375, 0.5], flat[1].Data, new ToleranceComparer(1e-15));
        Assert.Throws<ArgumentException>(() => MutualScoring.Fuse(e, [m[0]]));
    }

    [Theory]
    [InlineData(10, 4, 4)]
    [InlineData(10, 5, 5)]  // odd k, even n: the opposite image completes it
    [InlineData(11, 5, 4)]  // odd k, odd n: rounded down
    [InlineData(83, 32, 32)]
    [InlineData(7, 2, 2)]
    public void ReferencesAreASeededSymmetricSubsetOfTheOthers(int n, int k, int expected)
    {
        var refs = MutualScoring.References(n, k, seed: 5)!;
        Assert.Equal(n, refs.Count);
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(expected, refs[i].Count);
            Assert.Equal(expected, refs[i].Distinct().Count());
            Assert.DoesNotContain(i, refs[i]);
            Assert.All(refs[i], j => Assert.InRange(j, 0, n - 1));
            foreach (int j in refs[i]) Assert.Contains(i, refs[j]); // symmetric: one block serves both
        }
        // Deterministic for a seed, another seed another subset.
        Assert.Equal(refs.Select(r => string.Join(",", r)), MutualScoring.References(n, k, seed: 5)!.Select(r => string.Join(",", r)));
        if (k < n - 2)
            Assert.NotEqual(refs.Select(r => string.Join(",", r.Order())), MutualScoring.References(n, k, seed: 6)!.Select(r => string.Join(",", r.Order())));
    }

    [Fact]
    public void ReferencesAreAllTheOthersWhenTheCapAllowsIt()
    {
        Assert.Null(MutualScoring.References(5, 4, 0));
        Assert.Null(MutualScoring.References(5, 32, 0));
        Assert.NotNull(MutualScoring.References(34, 32, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => MutualScoring.References(1, 4, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => MutualScoring.References(5, 1, 0));
    }

    [Fact]
    public void OptionsParseTheirNamesAndRefuseOthers()
    {
        Assert.Equal(BankViews.Dihedral8, BankViews.Parse("dihedral8"));
        Assert.Equal(8, BankViews.Dihedral8.Count);
        Assert.Equal(1, BankViews.Parse("none").Count);
        Assert.Equal(BankViews.Rot4, new BankViews([0, 90, 180, 270], false)); // value equality over the angles
        Assert.Equal("rot4", new BankViews([0, 90, 180, 270], false).ToString());
        Assert.Throws<ArgumentException>(() => BankViews.Parse("rot8"));
        Assert.Equal(2, PatchMatching.Parse("local:2").Radius);
        Assert.True(PatchMatching.Parse("global").IsGlobal);
        foreach (string bad in new[] { "local", "local:-1", "local:x", "local:65", "nearest" })
            Assert.Throws<ArgumentException>(() => PatchMatching.Parse(bad));
        Assert.Equal(ImageScoreRule.TopK(0.01), ImageScoreRule.Parse("topk"));
        Assert.Equal(0.05, ImageScoreRule.Parse("topk:0.05").Fraction);
        foreach (string bad in new[] { "topk:0", "topk:2", "mean" })
            Assert.Throws<ArgumentException>(() => ImageScoreRule.Parse(bad));
    }

    private sealed class ToleranceComparer(double tolerance) : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) <= tolerance;
        public int GetHashCode(double v) => 0;
    }
}

/// <summary>The scoring options of issue 25 through the engine: mutual maps against a brute force, features reused for E, bank views
/// rebuilt from the shots, transductive detection and evaluation, and the defaults bit for bit.</summary>
[Collection(NativeCollection.Name)]
public sealed class PatchScoringEngineTests(FastCheckpointFixture fixture) : IClassFixture<FastCheckpointFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-patch-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static InpaintingModel ScoredModel() => ScoringApiTests.ScoredModel();

    private static RgbImage Load(string rel) => ScoringApiTests.Load(rel);

    /// <summary>M by its definition in float64: d_j(p) = min_q ||f_i(p) − f_j(q)||², the mean of the k smallest over the references.</summary>
    private static double[] BruteMutual(FeatureMaps f, IReadOnlyList<IReadOnlyList<int>> refs, int k)
    {
        int n = f.Count, c = f.Channels, p = f.Height * f.Width;
        double Dist(int i, int a, int j, int b)
        {
            double s = 0;
            for (int ch = 0; ch < c; ch++)
            {
                double d = f.Data[(i * c + ch) * p + a] - (double)f.Data[(j * c + ch) * p + b];
                s += d * d;
            }
            return s;
        }
        var m = new double[n * p];
        for (int i = 0; i < n; i++)
            for (int a = 0; a < p; a++)
                m[i * p + a] = refs[i].Select(j => Enumerable.Range(0, p).Min(b => Dist(i, a, j, b))).Order().Take(k).Average();
        return m;
    }

    [Fact]
    public void MutualMapsMatchABruteForceWithAndWithoutACap()
    {
        using var model = ScoredModel();
        var rng = new Random(3);
        const int n = 7, c = 6, h = 3, w = 4;
        var features = new FeatureMaps(n, c, h, w, Enumerable.Range(0, n * c * h * w).Select(_ => (float)(rng.NextDouble() * 2 + 1)).ToArray());
        var all = Enumerable.Range(0, n).Select(i => (IReadOnlyList<int>)Enumerable.Range(0, n).Where(j => j != i).ToList()).ToList();
        // All 6 others, 30 %: floor(1.8) = 1 smallest; 50 %: 3 smallest.
        foreach (var (fraction, k) in new[] { (0.3, 1), (0.5, 3) })
        {
            var expected = BruteMutual(features, all, k);
            var maps = model.MutualMaps(features, null, fraction);
            Assert.Equal(n, maps.Length);
            Assert.Equal((h, w), (maps[0].Height, maps[0].Width));
            double worst = maps.SelectMany((mp, i) => mp.Data.Select((v, a) => Math.Abs(v - expected[i * h * w + a]))).Max();
            Assert.True(worst < 1e-4, $"fraction {fraction}: max |M - brute force| = {worst}");
        }
        // A cap of 4 references per image (the seeded symmetric rule), 50 %: the 2 smallest of 4.
        var refs = MutualScoring.References(n, 4, seed: 9)!;
        var expectedCapped = BruteMutual(features, refs, 2);
        var capped = model.MutualMaps(features, refs, 0.5);
        double worstCapped = capped.SelectMany((mp, i) => mp.Data.Select((v, a) => Math.Abs(v - expectedCapped[i * h * w + a]))).Max();
        Assert.True(worstCapped < 1e-4, $"capped: max |M - brute force| = {worstCapped}");
        Assert.ThrowsAny<Exception>(() => model.MutualMaps(features, refs.Select(r => (IReadOnlyList<int>)r.Take(3).Append(r[0]).ToList()).ToList(), 0.5));
    }

    [Fact]
    public void FeaturesOnceGiveTheErrorMapsOfTheImagesAndLocalMatchingCoversGlobal()
    {
        using var model = ScoredModel();
        // pcb, not bottle: a centred round bottle finds its nearest patches at their own positions anyway.
        model.AddPrototypes("bottle", [Load("data/pcb/train/good/000.png")]);
        var images = new[] { Load("data/pcb/test/good/000.png"), Load("data/pcb/test/good/001.png"), Load("data/pcb/test/good/002.png") };
        var features = model.PrototypeFeatures(images);
        Assert.Equal((3, 384, 8, 8), (features.Count, features.Channels, features.Height, features.Width));
        var fromImages = model.ErrorMaps("bottle", images);
        var fromFeatures = model.ErrorMaps("bottle", features);
        // The same batch through the backbone: the same features, the same maps bit for bit.
        for (int i = 0; i < 3; i++) Assert.Equal(fromImages[i].Data, fromFeatures[i].Data);
        // Batches of 2 and 1: the convolutions may pick other kernels, within float32 rounding (1e-5 relative).
        var inPairs = model.ErrorMaps("bottle", model.PrototypeFeatures(images, batch: 2));
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 64; p++) Assert.Equal(fromImages[i].Data[p], inPairs[i].Data[p], 1e-5 * Math.Max(1, fromImages[i].Data[p]));
        // An 8 x 8 grid: radius 7 reaches every cell, so position-aware matching is the global nearest neighbour; radius 1 is not.
        var local7 = model.ErrorMaps("bottle", features, PatchMatching.Local(7));
        var local1 = model.ErrorMaps("bottle", features, PatchMatching.Local(1));
        // Float32 cancellation bounds the difference by eps x the squared norms, not by E: the tolerance is relative to the largest E.
        double tolerance = 1e-5 * fromFeatures.Max(m => m.Max());
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 64; p++)
            {
                Assert.Equal(fromFeatures[i].Data[p], local7[i].Data[p], tolerance);
                Assert.True(local1[i].Data[p] >= fromFeatures[i].Data[p] - tolerance, "a window of the bank cannot be closer than the whole bank");
            }
        // ... and somewhere the nearest patch of the whole bank lies outside the window.
        Assert.Contains(Enumerable.Range(0, 3 * 64), k => local1[k / 64].Data[k % 64] > fromFeatures[k / 64].Data[k % 64] + tolerance);
    }

    [Fact]
    public void DihedralViewsReplaceABankAndHoldTheMirroredShot()
    {
        using var model = ScoredModel();
        var shot = Load("data/pcb/train/good/000.png");
        model.AddPrototypes("pcb", [shot]);
        Assert.Equal(BankViews.Rot4, model.PrototypeViews("pcb"));
        var mirror = new RgbImage(shot.Width, shot.Height, new float[shot.Data.Length]);
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < shot.Height; y++)
                for (int x = 0; x < shot.Width; x++) mirror.Data[(ch * shot.Height + y) * shot.Width + x] = shot[ch, y, shot.Width - 1 - x];
        double before = model.ErrorMap("pcb", mirror).Data.Average();
        model.SetPrototypes("pcb", [shot], BankViews.Dihedral8);
        Assert.Equal(BankViews.Dihedral8, model.PrototypeViews("pcb"));
        Assert.Equal(8 * 8 * 8, model.PrototypeRows("pcb"));
        double after = model.ErrorMap("pcb", mirror).Max();
        Assert.True(after < 1e-3 * before, $"the mirrored shot is in the dihedral bank: E max {after} vs {before} (mean) with 4 rotations");
        model.SetPrototypes("pcb", [shot], BankViews.None);
        Assert.Equal(8 * 8, model.PrototypeRows("pcb"));
        Assert.Throws<AnomalySD.Native.AsdNotFoundException>(() => model.PrototypeViews("bottle"));
    }

    private Detector Open(ScoringRequest request) =>
        Detector.Open(fixture.Checkpoint, new DetectorSettings(["cpu"], new ScoringBackbones(), request), NullLogger.Instance);

    private List<RgbImage> TestImages(Detector detector) =>
        Directory.EnumerateFiles(Path.Combine(fixture.Data, "washer", "test"), "*.png", SearchOption.AllDirectories).Order().Select(detector.Decode).ToList();

    [Fact]
    public void DefaultsScoreBitForBitAsThePlainErrorMapPath()
    {
        // The composition every earlier engine used for E alone: E (eq. 14, global), bilinear upsampling, σ = 4 blur, max.
        using var plain = Open(new ScoringRequest(MaskStrategy.Prototype));
        using var spelled = Open(new ScoringRequest(MaskStrategy.Prototype, BankViews: BankViews.Rot4, Matching: PatchMatching.Global, ImageScore: ImageScoreRule.Max,
                                                   Transductive: TransductiveMode.Off));
        Assert.Null(spelled.Setup.RawScaleReason);
        var images = TestImages(plain);
        var a = plain.Detect("washer", images);
        var b = spelled.Detect("washer", images);
        for (int i = 0; i < images.Count; i++)
        {
            // One image: the engine's single-image error map, upsampled, blurred, its max; bit for bit.
            var reference = GaussianSmoothing.Blur(Map2D.ResizeBilinear(plain.Engine(0).ErrorMap("washer", images[i]), 64, 64), ScoreFusion.DefaultSigma);
            var one = spelled.Detect("washer", [images[i]])[0];
            Assert.Equal(reference.Max(), one.RawScore);
            Assert.Equal(reference.Data, one.Map.Data);
            // A batch (one native call for the backbone) bit for bit whether the defaults are spelled out or not; within float32 rounding of
            // the single image (the convolutions may pick other kernels for another batch size).
            Assert.Equal(a[i].RawScore, b[i].RawScore);
            Assert.Equal(a[i].Map.Data, b[i].Map.Data);
            Assert.Equal(reference.Max(), a[i].RawScore, 1e-5 * reference.Max());
        }
    }

    [Fact]
    public void RequestedViewsRebuildTheBanksFromTheCheckpointsShots()
    {
        using var detector = Open(new ScoringRequest(MaskStrategy.Prototype, BankViews: BankViews.Dihedral8, ImageScore: ImageScoreRule.TopK()));
        Assert.Equal(BankViews.Rot4, detector.Engine(0).PrototypeViews("washer"));
        var images = TestImages(detector);
        var r = detector.Detect("washer", images);
        Assert.Equal(BankViews.Dihedral8, detector.Engine(0).PrototypeViews("washer"));
        // The same as a model whose bank was built with those views from the same shot, scored by the top 1 % mean.
        using var model = ScoredModel();
        model.AddPrototypes("washer", ShotBanks.LoadShots(detector.Metadata, "washer", 64));
        model.SetPrototypes("washer", ShotBanks.LoadShots(detector.Metadata, "washer", 64), BankViews.Dihedral8);
        for (int i = 0; i < images.Count; i++)
        {
            var smoothed = GaussianSmoothing.Blur(Map2D.ResizeBilinear(model.ErrorMap("washer", images[i]), 64, 64));
            Assert.Equal(ImageScoreRule.TopK().Apply(smoothed), r[i].RawScore, 1e-5 * Math.Max(1, r[i].RawScore)); // a batch vs one image
        }
        // A shot that is gone is named.
        string copy = fixture.EditedCopy("moved-shots", m =>
        {
            foreach (var c in m["categories"]!.AsArray()) c!["shot_paths"] = new JsonArray(JsonValue.Create("/nonexistent/shot.png"));
        });
        using var moved = Detector.Open(copy, new DetectorSettings(["cpu"], new ScoringBackbones(), new ScoringRequest(MaskStrategy.Prototype, BankViews: BankViews.None)), NullLogger.Instance);
        var e = Assert.Throws<FileNotFoundException>(() => moved.Detect("washer", images));
        Assert.Contains("/nonexistent/shot.png", e.Message);
    }

    [Fact]
    public void TransductiveDetectionIsTheFusedMapOfTheWholeSet()
    {
        using var detector = Open(new ScoringRequest(MaskStrategy.Prototype, Transductive: TransductiveMode.On));
        var images = TestImages(detector);
        Assert.Throws<InvalidOperationException>(() => detector.Detect("washer", images));
        var results = detector.DetectTransductive("washer", images);
        Assert.All(results, r => Assert.Null(r.Score)); // raw scores
        // By hand from the engine's pieces: features once, E and M (all the others: the set is smaller than the cap), fused, upsampled, blurred.
        var engine = detector.Engine(0);
        var features = engine.PrototypeFeatures(images);
        var fused = MutualScoring.Fuse(engine.ErrorMaps("washer", features), engine.MutualMaps(features));
        for (int i = 0; i < images.Count; i++)
        {
            var smoothed = GaussianSmoothing.Blur(Map2D.ResizeBilinear(fused[i], 64, 64));
            Assert.Equal(smoothed.Max(), results[i].RawScore, 1e-9);
        }
        // A set's scores depend on the set: the same image scores differently among other images.
        var fewer = detector.DetectTransductive("washer", images.Take(3).ToList());
        Assert.NotEqual(results[0].RawScore, fewer[0].RawScore);
        Assert.Throws<ArgumentException>(() => detector.DetectTransductive("washer", images.Take(1).ToList()));

        using var mutual = Open(new ScoringRequest(MaskStrategy.Prototype, Transductive: TransductiveMode.Mutual, TransductiveRefs: 2));
        var m = mutual.DetectTransductive("washer", images);
        var refs = MutualScoring.References(images.Count, 2, 0);
        var alone = engine.MutualMaps(features, refs);
        for (int i = 0; i < images.Count; i++)
            Assert.Equal(GaussianSmoothing.Blur(Map2D.ResizeBilinear(alone[i], 64, 64)).Max(), m[i].RawScore, 1e-9);
    }

    [Fact]
    public void EvaluationScoresEachSplitAsOneSetAndRefusesShards()
    {
        var dataset = Datasets.Open(fixture.Data);
        using var detector = Open(new ScoringRequest(MaskStrategy.Prototype, Transductive: TransductiveMode.On));
        var result = Evaluator.Run(detector, dataset, ["washer"], NullLogger.Instance, null, new EvaluationOptions(EvalSize: 64));
        var samples = Evaluator.TestSamples(detector.Metadata, dataset, "washer", null);
        var direct = detector.DetectTransductive("washer", samples.Select(s => detector.Decode(s.ImagePath)).ToList());
        var scored = result.Scored["washer"];
        Assert.Equal(samples.Count, scored.Count);
        for (int i = 0; i < samples.Count; i++) Assert.Equal(direct[i].RawScore, scored[i].Score, 1e-9);
        Assert.Throws<ArgumentException>(() => Evaluator.Run(detector, dataset, ["washer"], NullLogger.Instance, null,
                                                             new EvaluationOptions(EvalSize: 64, Include: _ => true)));
    }

    [Fact]
    public void CliTakesTheFlagsAndRefusesTransductiveShardsAndServe()
    {
        string png = Path.Combine(fixture.Data, "washer", "test", "good", "000.png");
        string folder = Path.Combine(fixture.Data, "washer", "test");
        var (rc, stdout, stderr) = InProcessCli.Run("detect", "--checkpoint", fixture.Checkpoint, "--category", "washer", "--masks", "Prototype",
                                                    "--transductive", "on", "--bank-views", "dihedral8", "--matching", "local:1", "--image-score", "topk",
                                                    Path.Combine(folder, "good"), Path.Combine(folder, "scratch"));
        Assert.True(rc == 0, stderr);
        Assert.Contains("000.png", stdout);
        (rc, _, stderr) = InProcessCli.Run("eval", "--data", fixture.Data, "--checkpoint", fixture.Checkpoint, "--masks", "Prototype", "--transductive", "on",
                                           "--shard", "0/2", "--out", Path.Combine(_dir, "shard"));
        Assert.Equal(1, rc);
        Assert.Contains("run it unsharded", stderr);
        (rc, _, stderr) = InProcessCli.Run("detect", "--checkpoint", fixture.Checkpoint, "--category", "washer", "--matching", "local:x", png);
        Assert.Equal(1, rc);
        Assert.Contains("--matching", stderr);
        (rc, _, stderr) = InProcessCli.Run("detect", "--checkpoint", fixture.Checkpoint, "--category", "washer", "--transductive", "maybe", png);
        Assert.Equal(1, rc);
        Assert.Contains("--transductive", stderr);
        (rc, _, stderr) = InProcessCli.Run("fit", "--data", fixture.Data, "--bank-views", "dihedral8", "--out", Path.Combine(_dir, "fit"));
        Assert.Equal(1, rc);
        Assert.Contains("--bank-views", stderr);
        (rc, _, stderr) = InProcessCli.Run("serve", "--checkpoint", fixture.Checkpoint, "--transductive", "on");
        Assert.Equal(1, rc);
        Assert.Contains("serve scores each request on its own", stderr);
        (rc, _, stderr) = InProcessCli.Run("detect", "--checkpoint", fixture.Checkpoint, "--category", "washer", "--masks", "Prototype", "--transductive", "on", png);
        Assert.Equal(2, rc);
        Assert.Contains("1 image(s) could be read", stderr);
    }
}
