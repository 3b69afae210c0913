using AnomalySD.Data;
using AnomalySD.Metrics;
using AnomalySD.Calibration;
using AnomalySD.Checkpoints;
using AnomalySD.Detection;
using AnomalySD.Training;
using AnomalySD.Visualization;
using AnomalySD.Scoring;
using Microsoft.Extensions.Logging.Abstractions;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>Calibration from the shots: the calibration set, the weight search, normalised scores and the report's pictures.</summary>
[Collection(NativeCollection.Name)]
public sealed class CalibrationTests
{
    private static RgbImage Shot(int seed, int size = 64)
    {
        var rng = new Random(seed);
        var data = new float[3 * size * size];
        for (int c = 0; c < 3; c++)
        for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            data[(c * size + y) * size + x] = (float)(0.4 + 0.2 * Math.Sin(x / 4.0 + c) * Math.Cos(y / 6.0) + 0.02 * rng.NextDouble());
        return new RgbImage(size, size, data);
    }

    /// <summary>A dataset whose test split cannot be read: anything that touches it fails the test.</summary>
    private sealed class TrainOnly(IDataset inner) : IDataset
    {
        public string Root => inner.Root;
        public IReadOnlyList<string> Categories => inner.Categories;
        public IReadOnlyList<Sample> Train(string category) => inner.Train(category);
        public IReadOnlyList<Sample> Test(string category) => throw new InvalidOperationException("calibration read the test split");
    }

    [Fact]
    public void TheCalibrationSetIsDeterministicAndMadeFromShotsAlone()
    {
        var shots = new[] { Shot(1), Shot(2) };
        var fg = shots.Select(s => ForegroundMask.Full(s.Width, s.Height)).ToList();
        var a = CalibrationSet.Build(shots, fg, rotations: true, [Shot(9)], 3, 5, seed: 4);
        var b = CalibrationSet.Build(shots, fg, rotations: true, [Shot(9)], 3, 5, seed: 4);
        var c = CalibrationSet.Build(shots, fg, rotations: true, [Shot(9)], 3, 5, seed: 5);
        Assert.Equal(8, a.Count);
        Assert.Equal(3, a.Count(s => !s.IsAnomalous));
        Assert.Equal(["normal", "normal", "normal", "scratch", "hole", "stain", "cutpaste", "noise"], a.Select(s => s.Kind).ToList());
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Image.Data, b[i].Image.Data);
            Assert.Equal(a[i].Mask?.Data, b[i].Mask?.Data);
            if (a[i].Mask is { } m) Assert.True(m.Count > 0, $"{a[i].Kind}: the defect marks pixels");
        }
        Assert.NotEqual(a[3].Image.Data, c[3].Image.Data);

        // Through a whole fit: the test split is never read (the dataset throws if it is).
        var data = new TrainOnly(Datasets.Open(TestPaths.Shared("data")));
        var (model, meta) = Fitting.Fit(data, ["bottle"], new FitOptions(Shots: 1, UnetSteps: 2, AutoencoderSteps: 2, BatchSize: 2, AnalysisSize: 64,
            Calibration: new CalibrationOptions(1, 1, [0.4], 0.5, Scales: [1, 2], NumInferenceSteps: 10)), NullLogger.Instance);
        using (model)
        {
            var k = meta.Calibration["bottle"];
            Assert.Equal((1, 1, 0.4), (k.Normals, k.Defectives, k.NoiseStrength));
            var back = CheckpointMetadata.FromJson(meta.ToJson(), "x").Calibration["bottle"];
            Assert.Equal(k.ToJson().ToJsonString(), back.ToJson().ToJsonString());
        }
    }

    [Fact]
    public void SyntheticMasksMatchWhatWasPainted()
    {
        // On a flat grey image every painter changes exactly its masked pixels by more than half its contrast, and no pixel
        // outside its mask by more than half (the mask is where the defect's opacity exceeds 0.5).
        foreach (string kind in CalibrationSet.DefectKinds)
        {
            var img = new float[3, 64, 64];
            for (int c = 0; c < 3; c++) for (int y = 0; y < 64; y++) for (int x = 0; x < 64; x++) img[c, y, x] = 0.5f;
            var fg = new bool[64, 64];
            for (int y = 20; y < 44; y++) for (int x = 20; x < 44; x++) fg[y, x] = true;
            var other = new RgbImage(64, 64, Enumerable.Repeat(0.5f, 3 * 64 * 64).ToArray());
            var mask = CalibrationSet.PaintDefect(kind, img, fg, [other], new Random(3));
            double Change(int y, int x) => Enumerable.Range(0, 3).Max(c => Math.Abs(img[c, y, x] - 0.5));
            double maxChange = Enumerable.Range(0, 64 * 64).Max(i => Change(i / 64, i % 64));
            Assert.True(mask.Count > 0, kind);
            if (kind is "scratch" or "hole" or "cutpaste")
            {
                // Opaque painters: the mask is exactly the changed pixels.
                for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++)
                    Assert.True((mask[y, x] != 0) == (Change(y, x) > 1e-6), $"{kind} at ({y}, {x})");
            }
            else if (kind == "stain")
            {
                // A stain's opacity peaks at 0.85: full opacity would change a pixel by maxChange / 0.85, and the mask is where the
                // opacity exceeds 0.5, i.e. where the change exceeds 0.5 / 0.85 of maxChange.
                double half = maxChange * 0.5 / 0.85;
                for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++)
                    Assert.True((mask[y, x] != 0) == (Change(y, x) > half + 1e-6), $"{kind} at ({y}, {x})");
            }
            else
            {
                // Noise: every masked pixel was perturbed (fully opaque there).
                for (int y = 0; y < 64; y++) for (int x = 0; x < 64; x++) if (mask[y, x] != 0) Assert.True(Change(y, x) > 0, $"{kind} at ({y}, {x})");
            }
            // The defect sits on the foreground: its centre is within the foreground box.
            var ys = Enumerable.Range(0, 64 * 64).Where(i => mask.Data[i] != 0).Select(i => i / 64).ToList();
            Assert.InRange(ys.Average(), 14, 50);
        }
    }

    private static Map2D Flat(double v) => new(16, 16, Enumerable.Repeat(v, 256).ToArray());

    private static Map2D Spot(double background, double peak, int y0, int x0)
    {
        var m = Flat(background);
        for (int y = y0; y < y0 + 4; y++) for (int x = x0; x < x0 + 4; x++) m[y, x] = peak;
        return m;
    }

    private static BinaryMask SpotMask(int y0, int x0)
    {
        var d = new byte[256];
        for (int y = y0; y < y0 + 4; y++) for (int x = x0; x < x0 + 4; x++) d[y * 16 + x] = 1;
        return new BinaryMask(16, 16, d);
    }

    [Fact]
    public void TheWeightSearchPicksTheKnownBestWeights()
    {
        var rng = new Random(1);
        Map2D Noise() => new(16, 16, Enumerable.Range(0, 256).Select(_ => 100 * rng.NextDouble()).ToArray());
        // E marks the defects exactly. S_ms has strong false alarms on the normal images (any weight on it ranks a normal image
        // first) and S_pg is strong noise (any weight on it costs pixel AUROC): the unique best fusion is E alone.
        var maps = new List<CalibrationMaps>
        {
            new(Spot(0, 10, 5, 5), Noise(), Flat(0.1), null),
            new(Spot(0, 10, 1, 11), Noise(), Flat(0.1), null),
            new(Flat(0), Noise(), Spot(0.1, 1, 2, 3), SpotMask(2, 3)),
            new(Flat(0), Noise(), Spot(0.1, 1, 9, 8), SpotMask(9, 8)),
        };
        var grid = FusionWeights.SimplexGrid(0.1);
        Assert.Equal(66, grid.Count);
        var (w, objective) = Calibrator.SearchWeights(maps, MapScales.Raw, grid);
        Assert.Equal(new FusionWeights(0, 0, 1), w);
        Assert.Equal(1.0, objective, 12);
        // The roles swapped: S_ms alone.
        var ms = maps.Select(m => new CalibrationMaps(m.ErrorMap, m.Prototype, m.MultiScale!, m.Mask)).ToList();
        Assert.Equal(new FusionWeights(1, 0, 0), Calibrator.SearchWeights(ms, MapScales.Raw, grid).Weights);
        // Every map equally good: a tie, which goes to the paper's eq. 21 (0.9, 0.1, 0).
        var same = maps.Select(m => new CalibrationMaps(m.ErrorMap, m.ErrorMap, m.ErrorMap, m.Mask)).ToList();
        var tie = Calibrator.SearchWeights(same, MapScales.Raw, grid).Weights;
        Assert.Equal(0.9, tie.MultiScale, 12);
        Assert.Equal(0.1, tie.Prototype, 12);
        Assert.Equal(0.0, tie.ErrorMap, 12);
    }

    [Fact]
    public void TheBestLambdaWinsAndOnlyExactTiesGoToThePapersLambda()
    {
        // The 1-shot main job's pcb: 0.3 better by 1e-4 is chosen (no tolerance toward the paper's λ).
        Assert.Equal(1, Calibrator.ChooseLambda([(0.4, 0.8283), (0.3, 0.8284)], 0.4));
        // A better λ above the paper's wins too, whatever the order of the candidates.
        Assert.Equal(1, Calibrator.ChooseLambda([(0.4, 0.7451), (0.5, 0.7858), (0.3, 0.7737)], 0.4));
        Assert.Equal(2, Calibrator.ChooseLambda([(0.3, 0.99880), (0.4, 0.99880), (0.5, 0.99884)], 0.4));
        // Exact ties (the 4-shot checkpoint: both categories scored the same at 0.3 and 0.4): the paper's λ, in either order.
        Assert.Equal(1, Calibrator.ChooseLambda([(0.3, 0.9996), (0.4, 0.9996)], 0.4));
        Assert.Equal(0, Calibrator.ChooseLambda([(0.4, 0.9996), (0.3, 0.9996)], 0.4));
        // Equidistant from the paper's λ and tied: the smaller (fewer denoising steps).
        Assert.Equal(1, Calibrator.ChooseLambda([(0.5, 0.8), (0.3, 0.8)], 0.4));
        Assert.Throws<ArgumentException>(() => Calibrator.ChooseLambda([], 0.4));
    }

    [Fact]
    public void TheOneStandardErrorRuleTakesTheCheapestWeightingWithinOneStandardError()
    {
        Assert.Equal(0, Calibrator.Cost(new FusionWeights(0, 0, 1)));
        Assert.Equal(1, Calibrator.Cost(new FusionWeights(0, 0.6, 0.4)));
        Assert.Equal(2, Calibrator.Cost(new FusionWeights(0.1, 0, 0.9)));
        Assert.Equal(2, Calibrator.Cost(FusionWeights.Paper()));
        // Candidates cheapest first: (objective, standard error of best − candidate).
        Assert.Equal(0, Calibrator.ChooseParsimonious(0.9996, [(0.9990, 0.0008), (0.9995, 0.0001)]));
        Assert.Equal(1, Calibrator.ChooseParsimonious(0.90, [(0.80, 0.05), (0.89, 0.02)]));
        Assert.Equal(-1, Calibrator.ChooseParsimonious(0.90, [(0.80, 0.05), (0.85, 0.02)]));
        // Exactly one standard error below still qualifies (0.90 − 0.85 is 0.05 plus a rounding error).
        Assert.Equal(0, Calibrator.ChooseParsimonious(0.90, [(0.85, 0.05)]));
        // No standard error (the rule off, 0 resamples): the best is kept, even against an exact tie.
        Assert.Equal(-1, Calibrator.ChooseParsimonious(0.90, [(0.90, double.NaN)]));
        Assert.Equal(-1, Calibrator.ChooseParsimonious(0.90, []));
        // 0 resamples turns the rule off; 1 cannot give a standard error.
        new CalibrationOptions(Resamples: 0).Validate();
        Assert.Throws<ArgumentException>(() => new CalibrationOptions(Resamples: 1).Validate());
    }

    [Fact]
    public void ThePairedBootstrapMatchesTheExactStratifiedResamplingDistribution()
    {
        // 2 normals and 2 defectives: a stratified resample is one of 2^2 x 2^2 = 16 equally likely ordered draws, so the
        // bootstrap standard error converges to the standard deviation of the difference over those 16 draws, computed here
        // directly with Objective.
        var rng = new Random(5);
        Map2D Noisy(Map2D m) => new(16, 16, m.Data.Select(v => v + 0.6 * rng.NextDouble()).ToArray());
        var maps = new List<CalibrationMaps>
        {
            new(Noisy(Flat(0)), null, Noisy(Spot(0, 0.9, 3, 3)), null),
            new(Noisy(Spot(0, 1.2, 8, 2)), null, Noisy(Flat(0)), null),
            new(Noisy(Spot(0, 1, 2, 3)), null, Noisy(Spot(0, 0.5, 2, 3)), SpotMask(2, 3)),
            new(Noisy(Flat(0)), null, Noisy(Spot(0, 1.5, 9, 8)), SpotMask(9, 8)),
        };
        FusionWeights e = new(0, 0, 1), ms = new(1, 0, 0);
        double Diff(int[] draw)
        {
            var pick = draw.Select(i => maps[i]).ToList();
            return Calibrator.Objective(pick, MapScales.Raw, e, Calibrator.SearchPixelStride).Objective
                 - Calibrator.Objective(pick, MapScales.Raw, ms, Calibrator.SearchPixelStride).Objective;
        }
        var all = (from a in new[] { 0, 1 } from b in new[] { 0, 1 } from c in new[] { 2, 3 } from d in new[] { 2, 3 } select Diff([a, b, c, d])).ToList();
        double mean = all.Average(), exact = Math.Sqrt(all.Sum(v => (v - mean) * (v - mean)) / all.Count);
        Assert.True(exact > 0.01, $"the fixture must vary across draws, sd {exact}");

        double se = Calibrator.PairedStandardError(maps, MapScales.Raw, e, maps, MapScales.Raw, ms, 20000, seed: 3);
        Assert.InRange(se / exact, 0.97, 1.03);
        // Seeded, antisymmetric in its arguments, 0 against itself, NaN when off.
        Assert.Equal(se, Calibrator.PairedStandardError(maps, MapScales.Raw, e, maps, MapScales.Raw, ms, 20000, seed: 3));
        Assert.Equal(se, Calibrator.PairedStandardError(maps, MapScales.Raw, ms, maps, MapScales.Raw, e, 20000, seed: 3), 12);
        Assert.Equal(0.0, Calibrator.PairedStandardError(maps, MapScales.Raw, e, maps, MapScales.Raw, e, 200, seed: 3));
        Assert.True(double.IsNaN(Calibrator.PairedStandardError(maps, MapScales.Raw, e, maps, MapScales.Raw, ms, 0, seed: 3)));
        Assert.Throws<ArgumentException>(() => Calibrator.PairedStandardError(maps, MapScales.Raw, e, maps.Take(3).ToList(), MapScales.Raw, ms, 10, 3));
    }

    [Fact]
    public void NormalisationIsMonotonicAndPutsTheThresholdAtHalf()
    {
        var n = ScoreNormalization.Create(2, 5, 11);
        Assert.Equal(0.5, n.Apply(5), 12);
        Assert.Equal(0.0, n.Apply(2), 12);
        Assert.Equal(1.0, n.Apply(11), 12);
        Assert.Equal(0.25, n.Apply(3.5), 12);
        Assert.Equal(0.75, n.Apply(8), 12);
        Assert.Equal(0.0, n.Apply(-100), 12);
        Assert.Equal(1.0, n.Apply(1e9), 12);
        double previous = -1;
        for (double s = 0; s <= 13; s += 0.01)
        {
            double v = n.Apply(s);
            Assert.True(v >= previous, $"not monotonic at {s}");
            previous = v;
        }
        Assert.Throws<ArgumentException>(() => ScoreNormalization.Create(5, 5, 6));
        // The F1-optimal threshold sits halfway between the last score flagged and the first not flagged.
        var (t, f1) = BinaryCurve.From([0.1, 0.2, 0.9, 0.8, 0.3], [false, false, true, true, false]).F1OptimalThreshold();
        Assert.Equal(0.55, t, 12);
        Assert.Equal(1.0, f1, 12);
    }

    [Fact]
    public void ACheckpointWithoutCalibrationScoresWithThePapersValues()
    {
        var old = System.Text.Json.Nodes.JsonNode.Parse("""{"image_size": 64, "analysis_size": 256, "window_context": "0.5", "shots": 1, "categories": [{"name": "bottle", "coarse": ["A perfect bottle."], "fine": [], "noise_strength": 0.35}]}""")!.AsObject();
        var meta = CheckpointMetadata.FromJson(old, "old");
        Assert.Empty(meta.Calibration);
        var setup = ScoringRules.Resolve(meta, new ScoringRequest());
        Assert.Equal(0.35, setup.Metadata.Categories[0].NoiseStrength);
        Assert.Equal((FusionWeights.Paper(), MapScales.Raw), setup.Detector.FusionFor("bottle"));
        // With a calibration, the calibrated λ and weights are used; --calibrate off restores the paper's.
        var k = new CategoryCalibration(0.5, new FusionWeights(0.2, 0, 0.8), new MapScales(2, 1, 3), ScoreNormalization.Create(0, 1, 2), 1, 0.9, 0.8, 3, 4);
        var calibrated = meta with { Calibration = new Dictionary<string, CategoryCalibration> { ["bottle"] = k } };
        var on = ScoringRules.Resolve(calibrated, new ScoringRequest());
        Assert.Equal(0.5, on.Metadata.Categories[0].NoiseStrength);
        Assert.Equal(k.Weights, on.Detector.FusionFor("bottle").Weights);
        var off = ScoringRules.Resolve(calibrated, new ScoringRequest(Calibrate: false));
        Assert.Equal(0.35, off.Metadata.Categories[0].NoiseStrength);
        Assert.Equal(FusionWeights.Paper(), off.Detector.FusionFor("bottle").Weights);
        Assert.Equal(0.3, ScoringRules.Resolve(calibrated, new ScoringRequest(NoiseStrength: 0.3)).Metadata.Categories[0].NoiseStrength);
        // The calibration belongs to the full method's fused map: the E-only baseline keeps raw scores and no threshold.
        var prototype = ScoringRules.Resolve(calibrated, new ScoringRequest(Masks: MaskStrategy.Prototype));
        Assert.Empty(prototype.Metadata.Calibration);
        Assert.Equal(0.35, prototype.Metadata.Categories[0].NoiseStrength);
    }

    [Fact]
    public void ThePanelsPartsLineUp()
    {
        // A 32 x 24 image with a red 6 x 5 defect at rows 8..12, columns 10..15; the map peaks there, the predicted region and
        // the ground truth are that rectangle, and the restored image is the defect-free one.
        int w = 32, h = 24;
        var clean = new RgbImage(w, h, Enumerable.Repeat(0.5f, 3 * w * h).ToArray());
        var data = (float[])clean.Data.Clone();
        var gt = new byte[w * h];
        var map = new Map2D(h, w);
        for (int y = 8; y < 13; y++)
        for (int x = 10; x < 16; x++)
        {
            data[y * w + x] = 1f; data[w * h + y * w + x] = 0f; data[2 * w * h + y * w + x] = 0f;
            gt[y * w + x] = 1;
            map[y, x] = 1;
        }
        var image = new RgbImage(w, h, data);
        var truth = new BinaryMask(w, h, gt);
        using var panel = Visuals.Panel(image, map, Visuals.Region(map, 0.5), truth, clean);
        Assert.Equal((5 * w + 4 * Visuals.PanelGap, h), (panel.Width, panel.Height));
        int Tile(int k, int x) => k * (w + Visuals.PanelGap) + x;
        Assert.Equal(new Rgb24(255, 0, 0), panel[Tile(0, 12), 10]);               // the image
        Assert.Equal(new Rgb24(128, 128, 128), panel[Tile(0, 2), 2]);
        Assert.True(panel[Tile(1, 12), 10].R > panel[Tile(1, 2), 2].R);             // the map is hot on the defect
        Assert.True(panel[Tile(2, 12), 10].R > 200 && panel[Tile(2, 12), 10].G < 60); // predicted region: red over the defect
        Assert.Equal(new Rgb24(128, 128, 128), panel[Tile(2, 2), 2]);              // and nothing elsewhere
        Assert.Equal(new Rgb24(0, 255, 0), panel[Tile(3, 10), 8]);                 // ground-truth contour: the rectangle's corner
        Assert.Equal(new Rgb24(255, 0, 0), panel[Tile(3, 12), 10]);                // its inside shows the image
        Assert.Equal(new Rgb24(128, 128, 128), panel[Tile(4, 12), 10]);            // the restored image has no defect
        Assert.Equal(new Rgb24(0, 0, 0), panel[w + 1, 5]);                         // a gap
    }
}
