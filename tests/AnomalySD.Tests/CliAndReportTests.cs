using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Metrics;
using AnomalySD.Detection;
using AnomalySD.Scoring;
using Xunit;

namespace AnomalySD.Tests;

public sealed class CliAndReportTests
{
    [Fact]
    public void OptionsFileExpandsToFlagsAndCommandLineWins()
    {
        string path = Path.Combine(Path.GetTempPath(), $"opts-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, """{"shots": 2, "categories": ["bottle", "pcb"], "verbose": true, "seed": 9, "max_images": null}""");
        try
        {
            var args = CliSupport.ExpandConfig(["eval", "--config", path, "--seed", "3"]);
            Assert.Equal(["eval", "--seed", "3", "--shots", "2", "--categories", "bottle,pcb", "--verbose"], args);
        }
        finally { File.Delete(path); }
        Assert.Contains("'/nonexistent.json' does not exist", Assert.Throws<UsageException>(() => CliSupport.ExpandConfig(["fit", "--config", "/nonexistent.json"])).Message);
    }

    [Fact]
    public void ABadValueFromTheOptionsFileNamesTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"opts-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, """{"shots": -1, "image_size": 64}""");
        try
        {
            var args = CliSupport.ExpandConfig(["fit", "--config", path, "--lr", "-1"]);
            string shots = CliSupport.WithConfigSource(Assert.Throws<ArgumentException>(() => new FitVerb { Shots = -1 }.Validate()).Message);
            Assert.Equal($"--shots must be >= 0, got -1 (set in options file {path})", shots);
            // --lr came from the command line, not the file: its message is unchanged.
            Assert.Equal("--lr must be > 0, got -1", CliSupport.WithConfigSource("--lr must be > 0, got -1"));
            Assert.Equal(path, CliSupport.ConfigFileFor("image-size"));
            Assert.Null(CliSupport.ConfigFileFor("lr"));
            // "--image-size" must not match a longer flag that merely starts with it.
            Assert.Equal("--image-sizes bad", CliSupport.WithConfigSource("--image-sizes bad"));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void MalformedOrUnknownOptionsFileKeysAreOneLineErrorsNamingTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"opts-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(path, """{"unet_steps": "many"}""");
            var (rc, stdout, stderr) = RunCli(["fit", "--config", path, "--out", Path.Combine(Path.GetTempPath(), "never-written")]);
            Assert.Equal(1, rc);
            Assert.Contains($"anomalysd: error: {path}: the value of \"unet_steps\" must be a number, got the string \"many\"", stderr);
            Assert.DoesNotContain("ERROR(S)", stderr); // no usage dump for a value that came from the file
            File.WriteAllText(path, """{"bogus_key": 1}""");
            (rc, _, stderr) = RunCli(["fit", "--config", path, "--out", "x"]);
            Assert.Equal(1, rc);
            Assert.Contains($"{path}: unknown key \"bogus_key\"", stderr);
            (rc, stdout, _) = RunCli(["--help"]);
            Assert.Equal(0, rc);
            Assert.Contains("fit", stdout); // the verb list
            Assert.Contains("bench", stdout);
        }
        finally { File.Delete(path); }
    }

    private static (int Rc, string Stdout, string Stderr) RunCli(string[] args) => InProcessCli.Run(args);

    [Fact]
    public void FlagsAreValidatedBeforeAnyWork()
    {
        Assert.Equal([1, 2, 4, 8], EngineFlags.ParseScales("1,2,4,8"));
        Assert.Contains("'abc' is not a positive integer", Assert.Throws<ArgumentException>(() => EngineFlags.ParseScales("abc")).Message);
        Assert.Contains("'' is not a positive integer", Assert.Throws<ArgumentException>(() => EngineFlags.ParseScales("1,,2")).Message);
        Assert.Contains("repeated", Assert.Throws<ArgumentException>(() => EngineFlags.ParseScales("2,2")).Message);
        Assert.Contains("--images must be >= 1", Assert.Throws<ArgumentException>(() => new BenchVerb { Images = 0 }.Validate()).Message);
        Assert.Contains("--dtype F16 is not supported on the CPU", Assert.Throws<ArgumentException>(() => new BenchVerb { Dtype = "F16" }.Validate()).Message);
        Assert.Contains("--shots must be >= 0", Assert.Throws<ArgumentException>(() => new FitVerb { Shots = -1 }.Validate()).Message);
        Assert.Contains("--image-size must be a multiple of 32 from 32 to 2048, got 50 (or 0 for the model's default)", Assert.Throws<ArgumentException>(() => new FitVerb { ImageSize = 50 }.Validate()).Message);
        Assert.Contains("--lr must be > 0", Assert.Throws<ArgumentException>(() => new FitVerb { LearningRate = -1 }.Validate()).Message);
        Assert.Contains("--noise-strength must be in [0, 1]", Assert.Throws<ArgumentException>(() => new EvalVerb { NoiseStrength = 2 }.Validate()).Message);
        new EvalVerb { Data = "d", Out = "o" }.Validate(); // the defaults are valid
        new BenchVerb().Validate();
        // New flags: resolutions, windows, calibration, shards, devices; a fit refuses scoring flags; zero denoising steps.
        Assert.Contains("--analysis-size must be a multiple of 32", Assert.Throws<ArgumentException>(() => new EvalVerb { AnalysisSize = 100 }.Validate()).Message);
        Assert.Contains("must be 'full' or a number >= 0", Assert.Throws<ArgumentException>(() => new EvalVerb { WindowContext = "wide" }.Validate()).Message);
        Assert.Contains("--eval-size must be from 0 (original size) to 8192, got -1", Assert.Throws<ArgumentException>(() => new EvalVerb { EvalSize = -1 }.Validate()).Message);
        Assert.Contains("--feature-aggregation must be odd", Assert.Throws<ArgumentException>(() => new FitVerb { FeatureAggregation = 2 }.Validate()).Message);
        Assert.Contains("--calibrate must be on or off", Assert.Throws<ArgumentException>(() => new EvalVerb { Calibrate = "maybe" }.Validate()).Message);
        Assert.Contains("--calibration-size", Assert.Throws<ArgumentException>(() => new FitVerb { CalibrationSize = "3" }.Validate()).Message);
        Assert.Contains("calibration λ values must be in (0, 1]", Assert.Throws<ArgumentException>(() => new FitVerb { CalibrationLambdas = "0.4,1.5" }.Validate()).Message);
        Assert.Contains("must be I/N", Assert.Throws<ArgumentException>(() => new EvalVerb { Shard = "3/3", Checkpoint = "c" }.Validate()).Message);
        Assert.Contains("--scales is a scoring flag", Assert.Throws<ArgumentException>(() => new FitVerb { Scales = "1,2" }.Validate()).Message);
        Assert.Contains("fit runs one engine", Assert.Throws<ArgumentException>(() => new FitVerb { Device = "cpu,cpu" }.Validate()).Message);
        Assert.Contains("several engines need a checkpoint", Assert.Throws<ArgumentException>(() => new EvalVerb { Device = "cpu,cpu" }.Validate()).Message);
        Assert.Contains("'gpu0' must be cpu, cuda, cuda:N or cuda:all", Assert.Throws<ArgumentException>(() => new EvalVerb { Device = "gpu0" }.Validate()).Message);
        Assert.Contains("--noise-strength 0.05 of 15 inference steps leaves 0 denoising steps; use a noise strength >= 0.06667 or more steps", Assert.Throws<ArgumentException>(() => new EvalVerb { NumInferenceSteps = 15, NoiseStrength = 0.05 }.Validate()).Message);
        new EvalVerb { Device = "cpu,cpu", Checkpoint = "c", WindowContext = "full", AnalysisSize = 64, EvalSize = 0, Calibrate = "off", Data = "d", Out = "o" }.Validate();
        Assert.Contains("--data is required", Assert.Throws<ArgumentException>(() => new EvalVerb { Out = "o" }.Validate()).Message);
    }

    [Fact]
    public void RocCurveGroupsTies()
    {
        // scores 0.9(+), 0.8(-), 0.8(+), 0.1(-): thresholds 0.9 -> (0, 0.5); 0.8 (tie) -> (0.5, 1); 0.1 -> (1, 1).
        var (fpr, tpr) = BinaryCurve.From([0.9, 0.8, 0.8, 0.1], [true, false, true, false]).Roc();
        Assert.Equal([0, 0, 0.5, 1], fpr);
        Assert.Equal([0, 0.5, 1, 1], tpr);
    }

    [Fact]
    public void BilinearUpsamplingMatchesHandValues()
    {
        // 1x2 map [0, 1] -> 1x4 with align_corners = false: x = 0.25 * ... -> [0, 0.25, 0.75, 1].
        var up = Map2D.ResizeBilinear(new Map2D(1, 2, [0.0, 1.0]), 1, 4);
        Assert.Equal([0, 0.25, 0.75, 1], up.Data);
    }

    [Fact]
    public void SyntheticDatasetHasExactMasksInMVTecLayout()
    {
        string root = Directory.CreateTempSubdirectory("anomalysd-synth-").FullName;
        try
        {
            SyntheticDataset.Write(root, size: 64, train: 2, testGood: 2, testPerDefect: 2, seed: 1);
            var ds = Datasets.Open(root);
            Assert.Equal(["washer", "weave"], ds.Categories);
            var test = ds.Test("washer");
            Assert.Equal(2 + 3 * 2, test.Count);
            foreach (var s in test.Where(s => s.IsAnomalous))
            {
                var mask = ImageIO.LoadMask(s.MaskPath!, 0, 64, 64);
                var image = ImageIO.LoadRgb(s.ImagePath, 0);
                Assert.True(mask.Count > 0, s.ImagePath);
                if (s.DefectType == "hole")
                {
                    // Inside the mask the hole is drawn at 0.02 (5/255 after rounding): exact masks.
                    for (int i = 0; i < mask.Data.Length; i++)
                        if (mask.Data[i] == 1) Assert.True(image.Data[i] < 0.03f);
                }
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }
}
