using System.Text.Json.Nodes;
using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Checkpoints;
using AnomalySD.Detection;
using AnomalySD.Training;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

/// <summary>The main job on a tiny slice of ../shared/data (bottle and pcb, 1 shot, 64x64, few steps and masks).</summary>
[Collection(NativeCollection.Name)]
public sealed class EndToEndTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-e2e-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private EvalVerb TinyEval(string outDir) => new()
    {
        Data = TestPaths.Shared("data"), Categories = "bottle,pcb", Shots = 1, Model = "compact", ImageSize = 64,
        UnetSteps = 10, AutoencoderSteps = 10, BatchSize = 4, LearningRate = 1e-4, Out = outDir, Seed = 5,
        Scales = "1,2", NumInferenceSteps = 10, MaxImages = 4, Masks = MaskStrategy.Full,
    };

    [Fact]
    public void FitEvalWritesReportAndCheckpointReloadsToTheSameScores()
    {
        // fit -> checkpoint -> eval from the checkpoint; then eval again: same scores (seeded, CPU-deterministic).
        string ckpt = Path.Combine(_dir, "model");
        var fit = new FitVerb
        {
            Data = TestPaths.Shared("data"), Categories = "bottle,pcb", Shots = 1, Model = "compact", ImageSize = 64,
            UnetSteps = 10, AutoencoderSteps = 10, BatchSize = 4, LearningRate = 1e-4, Out = ckpt, Seed = 5,
            MixedPrecision = MixedPrecisionMode.Bf16, // the CPU's mixed precision (fp16 autocast is CUDA only)
            AnalysisSize = 128, CalibrationSize = "1,1", CalibrationLambdas = "0.4", // a small calibration (full default scoring: 86 masks, 50 steps)
        };
        Assert.Equal(0, FitCommand.Run(fit));
        using (var lease = CheckpointStore.OpenForRead(ckpt))
        {
            // The versioned layout: CURRENT names the version folder that holds the checkpoint's files.
            Assert.Equal(Path.Combine(ckpt, File.ReadAllText(Path.Combine(ckpt, CheckpointStore.PointerFile)).Trim()), lease.Folder);
            Assert.True(File.Exists(Path.Combine(lease.Folder, "anomalysd.json")));
            Assert.True(File.Exists(Path.Combine(lease.Folder, "prototype_banks.safetensors")));
        }

        string report = Path.Combine(_dir, "report");
        var eval = TinyEval(report);
        eval.Checkpoint = ckpt;
        Assert.Equal(0, EvalCommand.Run(eval));
        var results = JsonNode.Parse(File.ReadAllText(Path.Combine(report, "results.json")))!.AsObject();
        foreach (string category in new[] { "bottle", "pcb" })
        {
            var row = results["categories"]![category]!;
            Assert.Equal(4, row["images"]!.GetValue<int>());
            foreach (string metric in new[] { "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_f1_max", "pro" })
            {
                double v = row[metric]!.GetValue<double>();
                Assert.InRange(v, 0.0, 1.0);
            }
            Assert.True(File.Exists(Path.Combine(report, $"roc_{category}.png")));
        }
        Assert.NotNull(results["mean"]!["image_auroc"]);
        string md = File.ReadAllText(Path.Combine(report, "report.md"));
        Assert.Contains("| bottle |", md);
        Assert.Contains("best_detected", md);
        output.WriteLine(md);

        // detect: per-image score and decision, heatmaps, an unreadable file reported and counted (exit 3).
        string heat = Path.Combine(_dir, "heat");
        string broken = Path.Combine(_dir, "broken.png");
        File.WriteAllText(broken, "not a png");
        var detectOut = new StringWriter();
        int rc = DetectCommand.Run(new DetectVerb
        {
            Checkpoint = ckpt, Category = "bottle", Threshold = 0.0, Out = heat, Seed = 5,
            Inputs = [TestPaths.Shared("data/bottle/test/broken_large/000.png"), broken],
        }, detectOut);
        Assert.Equal(3, rc);
        string[] lines = detectOut.ToString().Trim().Split('\n');
        Assert.Equal("image\tscore\tnormalized\tdecision", lines[0]);
        Assert.Equal(2, lines.Length);
        Assert.EndsWith("\tanomalous", lines[1]); // any normalised score is >= threshold 0
        Assert.True(File.Exists(Path.Combine(heat, "000_panel.png")));

        // Same checkpoint, same seed: identical image scores.
        using var model1 = CheckpointLoader.Load(ckpt, "cpu", new ScoringBackbones(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance).Model;
        var meta = CheckpointMetadata.FromJson(model1.Info()["metadata"] as JsonObject, ckpt);
        Assert.Equal("bf16", meta.FitOptions!["mixed_precision"]!.GetValue<string>()); // the options are in the checkpoint
        Assert.Equal(10, meta.FitOptions["unet_steps"]!.GetValue<int>());
        // The resolutions and the window context round-trip through the checkpoint.
        Assert.Equal((64, 128, 256, Resolutions.DefaultWindowContext, 1), (meta.ImageSize, meta.AnalysisSize, meta.EvalSize, meta.WindowContext, meta.FeatureAggregation));
        Assert.Equal(["bottle", "pcb"], meta.Calibration.Keys.Order().ToList());
        var setup = ScoringRules.Resolve(meta, new ScoringRequest(Scales: [1, 2], NumInferenceSteps: 10, Seed: 5));
        Assert.Equal(Resolutions.DefaultWindowContext.ForEngine, setup.Detector.Inpaint!.WindowContext);
        Assert.Equal(64, setup.Detector.Inpaint.InpaintSize);
        var detector = new AnomalyModel(model1, setup.Detector);
        var image = ImageIO.LoadRgb(TestPaths.Shared("data/bottle/test/broken_large/000.png"), meta.AnalysisSize);
        double a = detector.Score("bottle", image, 0.4).Score, b = detector.Score("bottle", image, 0.4).Score;
        Assert.Equal(a, b);
        Assert.True(a > 0);
    }

    [Fact]
    public void PrototypeBaselineScoresWithoutInpainting()
    {
        string report = Path.Combine(_dir, "proto");
        var eval = TinyEval(report);
        eval.Masks = MaskStrategy.Prototype;
        eval.UnetSteps = 0;
        eval.AutoencoderSteps = 0;
        Assert.Equal(0, EvalCommand.Run(eval));
        var results = JsonNode.Parse(File.ReadAllText(Path.Combine(report, "results.json")))!.AsObject();
        Assert.Equal("Prototype", results["run"]!["masks"]!.GetValue<string>());
        Assert.InRange(results["categories"]!["bottle"]!["pixel_auroc"]!.GetValue<double>(), 0.0, 1.0);
    }

    [Fact]
    public void Fp16MixedPrecisionOnTheCpuIsRefusedByTheEngine()
    {
        using var model = InpaintingModel.CreateCompact(0, "cpu");
        var e = Assert.ThrowsAny<AnomalySD.Native.AsdException>(() =>
            ModelTrainer.Create(model, TrainerKind.Unet, new TrainerOptions(MixedPrecision: MixedPrecisionMode.Fp16)));
        Assert.Contains("fp16 needs a CUDA device", e.Message);
        using var bf16 = ModelTrainer.Create(model, TrainerKind.Unet, new TrainerOptions(MixedPrecision: MixedPrecisionMode.Bf16));
        // The automatic CPU batch: 2 MiB / (64 channels x 16 x 16 latents x 4 B) = 32 masks at 64x64, 8 at 128x128.
        Assert.Equal(32, model.AutoBatchSize(64, 64, 86));
        Assert.Equal(8, model.AutoBatchSize(128, 128, 86));
        Assert.Equal(3, model.AutoBatchSize(64, 64, 3));
        Assert.ThrowsAny<AnomalySD.Native.AsdException>(() => model.AutoBatchSize(64, 64, 0));
    }

    [Fact]
    public void UnknownCategoryAndCorruptCheckpointAreClearErrors()
    {
        var eval = TinyEval(Path.Combine(_dir, "x"));
        eval.Categories = "bottle,carpet";
        var e = Assert.Throws<KeyNotFoundException>(() => EvalCommand.Run(eval));
        Assert.Contains("unknown category 'carpet'", e.Message);

        string bad = Path.Combine(_dir, "bad");
        Directory.CreateDirectory(bad);
        File.WriteAllText(Path.Combine(bad, "model_index.json"), "{}");
        File.WriteAllText(Path.Combine(bad, "anomalysd.json"), "{\"format\": \"anomalysd-checkpoint\", \"format_version\": 7}");
        var ex = Assert.ThrowsAny<AnomalySD.Native.AsdException>(() => InpaintingModel.Load(bad));
        Assert.Contains("format_version 7", ex.Message);
    }
}
