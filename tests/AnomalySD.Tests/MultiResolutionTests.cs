using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Masks;
using AnomalySD.Metrics;
using AnomalySD.Checkpoints;
using AnomalySD.Detection;
using AnomalySD.Evaluation;
using AnomalySD.Training;
using AnomalySD.Scoring;
using AnomalySD.Text;
using Microsoft.Extensions.Logging.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>Multi-resolution scoring: inpainting windows, the analysis resolution and the evaluation resolution.</summary>
[Collection(NativeCollection.Name)]
public sealed class MultiResolutionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-multires-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static InpaintingModel ScoredModel(ulong seed)
    {
        var model = InpaintingModel.CreateCompact(seed);
        Fitting.ConfigureScoring(model, new ScoringBackbones());
        var tok = new HashPromptTokenizer();
        model.SetCategory("bottle", tok.EncodePadded(["A perfect bottle."]), tok.MaxLength);
        return model;
    }

    /// <summary>The compact model (seed 3) with one bottle shot as prototypes, a broken bottle at 64 px, 10 steps at λ 0.4 (seed 5),
    /// whole-image inpainting at 64 px, and a detector with grid scales 1, 2, 4.</summary>
    private static (InpaintingModel Model, RgbImage Image, InpaintOptions Inpaint, AnomalyModel Detector) BottleAt64()
    {
        var model = ScoredModel(3);
        var image = ImageIO.LoadRgb(TestPaths.Shared("data/bottle/test/broken_large/000.png"), 64);
        model.AddPrototypes("bottle", [ImageIO.LoadRgb(TestPaths.Shared("data/bottle/train/good/000.png"), 64)]);
        var inpaint = new InpaintOptions(10, 0.4, 0, 5, WindowContext: null, InpaintSize: 64);
        return (model, image, inpaint, new AnomalyModel(model, new DetectorOptions(MaskStrategy.Full, [1, 2, 4], Inpaint: inpaint)));
    }

    [Fact]
    public void WithoutAMultiScaleWeightOnlyThePrototypeMaskIsInpaintedWithItsOwnNoise()
    {
        // A calibrated weight of 0 on S_ms needs only the prototype mask: inpainted alone, it must keep the noise it has after the
        // 21 grid masks (seed + 21), so S_pg is the full computation's (within float error of another batch shape).
        var (model, image, inpaint, detector) = BottleAt64();
        using var _ = model;
        var all = detector.Components("bottle", image, null, inpainting: true, errorMap: true);
        var alone = detector.Components("bottle", image, null, inpainting: true, errorMap: true, multiScale: false);
        Assert.NotNull(all.MultiScale);
        Assert.Null(alone.MultiScale);
        Assert.True(all.PrototypeMask!.Count > 0);
        Assert.True(all.Prototype!.Max() > 0.01, $"S_pg max {all.Prototype.Max()}");
        double diff = all.Prototype.Data.Zip(alone.Prototype!.Data, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(diff < 1e-5, $"S_pg of the prototype mask alone differs by {diff}");
        Assert.Equal(all.ErrorMap!.Data, alone.ErrorMap!.Data);
    }

    [Fact]
    public void FullContextAtTheInpaintingSizeReproducesTheWholeImageScores()
    {
        // The scoring of before windows existed, written out from the primitives: every mask inpaints the whole 64 px image,
        // D(x, x̂_i) on the whole image (eq. 16-17), then eq. 18-21 and the blur. --window-context full with the analysis
        // size equal to the inpainting size must give the same map and score within 1e-6.
        var (model, image, inpaint, detector) = BottleAt64();
        using var _ = model;
        var score = detector.Score("bottle", image);

        var grid = MaskProposals.Grid(64, 64, [1, 2, 4]);
        var errors = model.ErrorMap("bottle", image);
        var prototype = PrototypeThreshold.Mask(errors, PrototypeThreshold.Select(errors), 64, 64);
        var masks = grid.Select(g => g.Mask).Append(new BinaryMask(64, 64, Array.ConvertAll(prototype.Data, v => v > 0.5 ? (byte)1 : (byte)0))).ToList();
        var inpaintings = model.Inpaint("bottle", image, masks, new InpaintOptions(10, 0.4, 0, 5));
        var distances = model.DistanceMaps(image, inpaintings);
        static Map2D AsMap(BinaryMask m) => new(m.Height, m.Width, Array.ConvertAll(m.Data, v => (double)v));
        var scales = grid.Select((g, i) => (g, i)).GroupBy(t => t.g.Scale)
            .Select(s => ScoreFusion.ScaleScore(s.Select(t => AsMap(t.g.Mask)).ToList(), s.Select(t => distances[t.i]).ToList())).ToList();
        var expected = ScoreFusion.Score(scales, ScoreFusion.PrototypeScore(AsMap(masks[^1]), distances[^1]));

        Assert.Equal(expected.ImageScore, score.Score, 1e-6);
        Assert.True(expected.SmoothedMap.Data.Zip(score.SmoothedMap.Data, (a, b) => Math.Abs(a - b)).Max() < 1e-6);
    }

    [Fact]
    public void WindowedScoringPastesInsideMasksAndScoresAtTheAnalysisSize()
    {
        using var model = ScoredModel(4);
        var image = ImageIO.LoadRgb(TestPaths.Shared("data/bottle/test/broken_large/000.png"), 128);
        var masks = MaskProposals.Grid(128, 128, [4]).Select(g => g.Mask).ToList();
        var options = new InpaintOptions(10, 0.4, 0, 5, WindowContext: 0.5, InpaintSize: 64);
        var (distances, inpaintings) = model.InpaintDistances("bottle", image, masks, options, returnInpaintings: true);
        Assert.Equal(16, distances.Length);
        for (int k = 0; k < masks.Count; k++)
        {
            Assert.Equal((128, 128), (distances[k].Height, distances[k].Width));
            for (int c = 0; c < 3; c++)
            for (int i = 0; i < 128 * 128; i++)
                if (masks[k].Data[i] == 0) Assert.Equal(image.Data[c * 128 * 128 + i], inpaintings![k].Data[c * 128 * 128 + i], 6);
        }
        // A 32 px cell at 128 px gets a 64 px window: D is zero beyond it. Cell (0, 0) -> window rows/columns [0, 64).
        Assert.Equal(0.0, distances[0][100, 100]);
        Assert.True(distances[0][10, 10] > 0);
    }

    [Fact]
    public void OlderCheckpointMetadataKeepsItsBehaviour()
    {
        // Written before multi-resolution scoring: no analysis/eval size, no window context. It is scored as it was: at the
        // inpainting resolution, whole-image inpainting, metrics at that resolution.
        var old = JsonNode.Parse("""{"image_size": 64, "model_source": "compact", "shots": 1, "categories": [{"name": "bottle", "coarse": ["A perfect bottle."], "fine": [], "noise_strength": 0.4}]}""")!.AsObject();
        var meta = CheckpointMetadata.FromJson(old, "old");
        Assert.Equal((64, 64, true, 1), (meta.AnalysisSize, meta.EvalSize, meta.WindowContext.IsFull, meta.FeatureAggregation));
        var setup = ScoringRules.Resolve(meta, new ScoringRequest());
        Assert.Null(setup.Detector.Inpaint!.WindowContext);
        Assert.Equal(64, setup.EvalSize);
        // And a new one round-trips.
        var now = meta with { AnalysisSize = 256, EvalSize = 0, WindowContext = new WindowContext(1.0), FeatureAggregation = 3 };
        var back = CheckpointMetadata.FromJson(now.ToJson(), "new");
        Assert.Equal((256, 0, 1.0, 3), (back.AnalysisSize, back.EvalSize, back.WindowContext.Margin, back.FeatureAggregation));
        // A request overrides the checkpoint's choices.
        var over = ScoringRules.Resolve(back, new ScoringRequest(AnalysisSize: 128, WindowContext: WindowContext.Full, EvalSize: 256, NoiseStrength: 0.3));
        Assert.Equal((128, true, 256, 0.3), (over.Metadata.AnalysisSize, over.Metadata.WindowContext.IsFull, over.EvalSize, over.Metadata.Categories[0].NoiseStrength));
    }

    [Fact]
    public void WindowContextParsing()
    {
        Assert.True(WindowContext.Parse("full").IsFull);
        Assert.True(WindowContext.Parse("FULL").IsFull);
        Assert.Equal(0.5, WindowContext.Parse("0.5").Margin);
        Assert.Equal(0.0, WindowContext.Parse("0").Margin);
        Assert.Equal("1", new WindowContext(1.0).ToString());
        Assert.Null(WindowContext.Full.ForEngine);
        foreach (string bad in new[] { "-1", "abc", "", "NaN", "Infinity" })
            Assert.Contains("must be 'full' or a number >= 0", Assert.Throws<ArgumentException>(() => WindowContext.Parse(bad)).Message);
    }

    [Fact]
    public void MetricsAtTheOriginalSizeUseTheOriginalMasks()
    {
        // A dataset of 96 x 80 images (not square, not the analysis size) with masks at that size; --eval-size 0 compares
        // each map, resized bilinearly to 96 x 80, with the mask read at 96 x 80. Checked against the same computation done
        // here from the detector's maps.
        string root = Path.Combine(_dir, "data", "widget");
        var rng = new Random(2);
        void Write(string rel, Func<int, int, Rgb24> pixel)
        {
            string path = Path.Combine(root, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var img = new Image<Rgb24>(96, 80);
            for (int y = 0; y < 80; y++) for (int x = 0; x < 96; x++) img[x, y] = pixel(x, y);
            img.SaveAsPng(path);
        }
        Rgb24 Normal(int x, int y) => new((byte)(100 + 50 * Math.Sin(x / 5.0)), (byte)(120 + 40 * Math.Cos(y / 7.0)), 90);
        Write("train/good/000.png", Normal);
        Write("test/good/000.png", Normal);
        Write("test/good/001.png", (x, y) => Normal(x + 1, y));
        for (int d = 0; d < 2; d++)
        {
            int x0 = 20 + 30 * d, y0 = 30;
            Write($"test/spot/00{d}.png", (x, y) => x >= x0 && x < x0 + 12 && y >= y0 && y < y0 + 9 ? new Rgb24(255, 0, 255) : Normal(x, y));
            string mask = Path.Combine(root, "ground_truth", "spot", $"00{d}_mask.png");
            Directory.CreateDirectory(Path.GetDirectoryName(mask)!);
            using var m = new Image<L8>(96, 80);
            for (int y = y0; y < y0 + 9; y++) for (int x = x0; x < x0 + 12; x++) m[x, y] = new L8(255);
            m.SaveAsPng(mask);
        }
        var dataset = Datasets.Open(Path.Combine(_dir, "data"));
        var (model, meta) = Fitting.Fit(dataset, ["widget"], new FitOptions(Shots: 1, UnetSteps: 0, AutoencoderSteps: 0, AnalysisSize: 64), NullLogger.Instance);
        using (var detector0 = Detector.FromModel(model, meta, new ScoringRequest(MaskStrategy.Prototype), NullLogger.Instance))
        {
            var options = new DetectorOptions(MaskStrategy.Prototype);
            var result = Evaluator.Run(detector0, dataset, ["widget"], NullLogger.Instance, null, new EvaluationOptions(EvalSize: 0));
            var pixel = new PixelAuroc();
            var pro = new PixelPro(0.3);
            var detector = new AnomalyModel(model, options);
            foreach (var sample in dataset.Test("widget"))
            {
                var map = Map2D.ResizeBilinear(detector.Score("widget", ImageIO.LoadRgb(sample.ImagePath, 64)).SmoothedMap, 80, 96);
                var mask = sample.MaskPath is null ? new byte[96 * 80] : ImageIO.LoadMask(sample.MaskPath, 0).Data;
                Assert.Equal(96 * 80, mask.Length);
                var values = Array.ConvertAll(map.Data, v => (float)v);
                pixel.Update(values, mask);
                pro.Update(values, mask, 80, 96);
            }
            Assert.Equal(pixel.Compute(), result.Categories[0].PixelAuroc, 12);
            Assert.Equal(pro.Compute(), result.Categories[0].Pro, 12);
            // At 256 the result differs (the masks are resized): the evaluation resolution is really used.
            var at256 = Evaluator.Run(detector0, dataset, ["widget"], NullLogger.Instance, null, new EvaluationOptions(EvalSize: 256));
            Assert.NotEqual(result.Categories[0].Pro, at256.Categories[0].Pro);
        }
    }
}
