using System.Text.Json.Nodes;
using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Checkpoints;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>A small dataset and a checkpoint fitted on it in seconds (no training, no calibration), shared by a test class.</summary>
public sealed class FastCheckpointFixture : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("anomalysd-fast-").FullName;
    public string Data => Path.Combine(Dir, "data");
    public string Checkpoint => Path.Combine(Dir, "ckpt");

    public FastCheckpointFixture()
    {
        SyntheticDataset.Write(Data, size: 64, train: 2, testGood: 2, testPerDefect: 1, seed: 1);
        var fit = new FitVerb
        {
            Data = Data, Categories = "washer", Shots = 1, UnetSteps = 0, AutoencoderSteps = 0, Calibrate = "off", AnalysisSize = 64, Out = Checkpoint,
        };
        fit.Validate();
        Assert.Equal(0, FitCommand.Run(fit));
    }

    /// <summary>A copy of the checkpoint's current version as a folder of an earlier engine's layout, with its anomalysd.json edited.</summary>
    public string EditedCopy(string name, Action<JsonObject> editMetadata)
    {
        string copy = Path.Combine(Dir, name);
        using (var lease = CheckpointStore.OpenForRead(Checkpoint)) Copy(lease.Folder, copy);
        string manifest = Path.Combine(copy, CheckpointStore.ManifestFile);
        var json = JsonNode.Parse(File.ReadAllText(manifest))!.AsObject();
        editMetadata(json["metadata"]!.AsObject());
        File.WriteAllText(manifest, json.ToJsonString());
        return copy;
    }

    public static void Copy(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string f in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, f));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(f, target, overwrite: true);
        }
    }

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}

/// <summary>Runs the CLI's entry point in this process with captured console streams (exit code, stdout, stderr).</summary>
public static class InProcessCli
{
    private static readonly object Gate = new();

    public static (int Rc, string Stdout, string Stderr) Run(params string[] args)
    {
        lock (Gate)
        {
            var (oldOut, oldErr) = (Console.Out, Console.Error);
            var (stdout, stderr) = (new StringWriter(), new StringWriter());
            Console.SetOut(stdout);
            Console.SetError(stderr);
            try
            {
                object? rc = typeof(BenchVerb).Assembly.EntryPoint!.Invoke(null, [args]);
                return ((int)rc!, stdout.ToString(), stderr.ToString());
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
        }
    }
}

/// <summary>Bad input found by probing the CLI (robustness, round 2, items 4-8 and 10-12): each is refused or skipped with a
/// message that names the file and the problem, under one exit-code rule.</summary>
[Collection(NativeCollection.Name)]
public sealed class InputValidationTests(FastCheckpointFixture fixture) : IClassFixture<FastCheckpointFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-input-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Image<Rgb24> Noise(int width, int height, int seed)
    {
        var rng = new Random(seed);
        var image = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) image[x, y] = new Rgb24((byte)rng.Next(256), (byte)rng.Next(256), (byte)(x * 4));
        return image;
    }

    public static TheoryData<string> Formats => ["png", "jpg", "bmp", "gif", "tiff", "tga", "webp", "ppm"];

    [Theory]
    [MemberData(nameof(Formats))]
    public void AnImageWhoseDataEndsEarlyIsRefusedNamingTheFile(string extension)
    {
        // Before: a PNG cut to 90 % of its length scored 936 (intact: 667), a JPEG cut short was scored too, exit 0.
        string path = Path.Combine(_dir, "whole." + extension);
        using (var image = Noise(48, 40, 1)) image.Save(path);
        var whole = File.ReadAllBytes(path);
        Assert.Equal((48, 40), (ImageIO.LoadRgb(path, 0).Width, ImageIO.LoadRgb(path, 0).Height));
        foreach (double fraction in new[] { 0.9, 0.5 })
        {
            string cut = Path.Combine(_dir, $"cut{fraction * 100}.{extension}");
            File.WriteAllBytes(cut, whole[..(int)(whole.Length * fraction)]);
            var e = Assert.Throws<ImageLoadException>(() => ImageIO.LoadRgb(cut, 64));
            Assert.StartsWith($"{cut}: truncated", e.Message);
        }
    }

    [Fact]
    public void EvalSkipsATruncatedImageNamesItAndExitsThree()
    {
        // Before: one truncated normal image dropped image AUROC from 1.000 to 0.667, with no warning and exit 0.
        string data = Path.Combine(_dir, "data");
        FastCheckpointFixture.Copy(fixture.Data, data);
        string good = Path.Combine(data, "washer", "test", "good", "000.png");
        var bytes = File.ReadAllBytes(good);
        File.WriteAllBytes(good, bytes[..(int)(bytes.Length * 0.9)]);
        var (rc, stdout, stderr) = InProcessCli.Run("eval", "--data", data, "--checkpoint", fixture.Checkpoint, "--masks", "Prototype", "--out", Path.Combine(_dir, "r"));
        Assert.Equal(3, rc);
        Assert.Contains($"skipped: {good}: truncated", stderr);
        Assert.Contains("1 image(s) skipped", stderr);
        var results = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "r", "results.json")))!;
        Assert.Contains(good, results.ToJsonString());
        Assert.DoesNotContain("skipped", stdout.Split('\n').Where(l => l.Contains("image\tscore")).FirstOrDefault() ?? "");
    }

    public static TheoryData<string, Action<JsonObject>, string> BadMetadata => new()
    {
        // (case, edit of anomalysd.json's metadata, what the error must say after "anomalysd.json: ")
        { "analysis_size -1", m => m["analysis_size"] = -1, "\"metadata.analysis_size\" must be a multiple of 32 from 64 to 2048, got -1" },
        { "analysis_size missing", m => m.Remove("analysis_size"), "\"metadata.analysis_size\" is missing" },
        { "analysis_size 100000", m => m["analysis_size"] = 100000, "\"metadata.analysis_size\" must be a multiple of 32 from 64 to 2048, got 100000" },
        { "eval_size -5", m => m["eval_size"] = -5, "\"metadata.eval_size\" must be from 0 (original size) to 8192, got -5" },
        { "image_size 128", m => m["image_size"] = 128, "\"metadata.image_size\" is 128, but the weights were trained at 64 px" },
        { "image_size \"64\"", m => m["image_size"] = "64", "\"metadata.image_size\" must be a whole number, got the string \"64\"" },
        { "noise_strength \"x\"", m => m["categories"]![0]!["noise_strength"] = "x", "\"metadata.categories[0].noise_strength\" must be a number, got the string \"x\"" },
        { "noise_strength 2", m => m["categories"]![0]!["noise_strength"] = 2, "\"metadata.categories[0].noise_strength\" must be in [0, 1], got 2" },
        { "shots 99999999999", m => m["shots"] = 99999999999L, "\"metadata.shots\" must be a whole number from 0 to 2147483647, got 99999999999" },
        { "no name", m => m["categories"]![0]!.AsObject().Remove("name"), "\"metadata.categories[0].name\" is missing" },
        { "no noise_strength", m => m["categories"]![0]!.AsObject().Remove("noise_strength"), "\"metadata.categories[0].noise_strength\" is missing" },
        { "window_context wide", m => m["window_context"] = "wide", "\"metadata.window_context\" must be 'full' or a number >= 0, got the string \"wide\"" },
        { "feature_aggregation 2", m => m["feature_aggregation"] = 2, "\"metadata.feature_aggregation\" must be odd, from 1 (off) to 15 (3 = PatchCore), got 2" },
        { "distance other", m => m["distance"] = "l2", "\"metadata.distance\" must be one of \"resnet18_uniform\", \"lpips_alex\", got \"l2\"" },
        { "categories empty", m => m["categories"] = new JsonArray(), "\"metadata.categories\" is empty" },
    };

    [Theory]
    [MemberData(nameof(BadMetadata))]
    public void CheckpointValuesAreValidatedLikeFlagsNamingTheFileAndTheKey(string name, Action<JsonObject> edit, string says)
    {
        // Before: analysis_size -1 or missing ran at 64 px (image AUROC 0.000, exit 0), eval_size -5 went into results.json,
        // image_size 128 ran silently; wrong types and a missing name were internal errors (NullReferenceException, exit 2).
        string copy = fixture.EditedCopy("edited-" + name.Replace(' ', '_').Replace("\"", ""), edit);
        var (rc, _, stderr) = InProcessCli.Run("detect", "--checkpoint", copy, "--category", "washer", "--masks", "Prototype",
                                               Path.Combine(fixture.Data, "washer", "test", "good", "000.png"));
        Assert.Equal(2, rc);
        Assert.Contains($"anomalysd: error: {Path.Combine(copy, CheckpointStore.ManifestFile)}: {says}", stderr);
    }

    [Fact]
    public void CheckpointFoldersThatAreNotCheckpointsSayWhy()
    {
        string empty = Directory.CreateDirectory(Path.Combine(_dir, "empty")).FullName;
        string file = Path.Combine(_dir, "file");
        File.WriteAllText(file, "x");
        string dirManifest = Path.Combine(_dir, "dir-manifest");
        Directory.CreateDirectory(Path.Combine(dirManifest, CheckpointStore.ManifestFile));
        foreach (var (path, says) in new[]
                 {
                     (empty, $"'{empty}' is not an AnomalySD checkpoint: it has neither CURRENT nor anomalysd.json"),
                     (file, $"checkpoint '{file}' is a file; a checkpoint is the folder that fit --out writes"),
                     (dirManifest, $"'{Path.Combine(dirManifest, CheckpointStore.ManifestFile)}' is a folder"),
                     (Path.Combine(_dir, "missing"), $"checkpoint '{Path.Combine(_dir, "missing")}' does not exist"),
                 })
        {
            var (rc, _, stderr) = InProcessCli.Run("detect", "--checkpoint", path, "--category", "washer", Path.Combine(fixture.Data, "washer", "test", "good", "000.png"));
            Assert.Equal(2, rc);
            Assert.Contains(says, stderr);
        }
    }

    [Fact]
    public void OptionsFileValuesAreTypeCheckedAndEveryFlagSyntaxWorks()
    {
        string png = Path.Combine(fixture.Data, "washer", "test", "good", "000.png");
        string config = Path.Combine(_dir, "o.json");
        string[] detect = ["detect", "--checkpoint", fixture.Checkpoint, "--category", "washer", "--masks", "Prototype"];
        // Before: {"verbose": "<png>"} added the png as an input to score; {"threshold": true} was dropped silently.
        File.WriteAllText(config, $$"""{"verbose": "{{png}}"}""");
        var (rc, stdout, stderr) = InProcessCli.Run([.. detect, "--config", config, png]);
        Assert.Equal(1, rc);
        Assert.Contains($"{config}: the value of \"verbose\" must be true or false, got the string \"{png}\"", stderr);
        File.WriteAllText(config, """{"threshold": true}""");
        (rc, _, stderr) = InProcessCli.Run([.. detect, "--config", config, png]);
        Assert.Equal(1, rc);
        Assert.Contains($"{config}: the value of \"threshold\" must be a number, got true", stderr);
        // --config=FILE is read (before: ignored); the file's value applies.
        File.WriteAllText(config, """{"threshold": 2.5}""");
        (rc, stdout, _) = InProcessCli.Run([.. detect, $"--config={config}", png]);
        Assert.Equal(0, rc);
        Assert.Contains("\tnormal", stdout); // raw score against a threshold of 2.5 on an uncalibrated checkpoint
        // --config without a file, twice, or naming an unknown key: usage errors (exit 1).
        (rc, _, stderr) = InProcessCli.Run([.. detect, png, "--config"]);
        Assert.Equal(1, rc);
        Assert.Contains("--config needs a file", stderr);
        (rc, _, stderr) = InProcessCli.Run([.. detect, "--config", config, "--config", config, png]);
        Assert.Equal(1, rc);
        // A 5-million-item array: one short line, not a 10 MB one.
        File.WriteAllText(config, "{\"categories\": [" + string.Join(",", Enumerable.Repeat("\"washer\"", 5_000_000)) + "]}");
        (rc, _, stderr) = InProcessCli.Run(["eval", "--config", config, "--data", fixture.Data, "--out", Path.Combine(_dir, "r")]);
        Assert.Equal(1, rc);
        Assert.True(stderr.Length < 400, $"{stderr.Length} characters");
        Assert.Contains("must be an array of at most 10000 items, got an array of 5000000 items", stderr);
    }

    [Fact]
    public void DashDashEndsTheFlagsAndAShardCountNeedsAnIndex()
    {
        string dash = Path.Combine(_dir, "-dash.png");
        File.Copy(Path.Combine(fixture.Data, "washer", "test", "good", "000.png"), dash);
        var (rc, stdout, stderr) = InProcessCli.Run("detect", "--checkpoint", fixture.Checkpoint, "--category", "washer", "--masks", "Prototype", "--", dash);
        Assert.True(rc == 0, stderr);
        Assert.Contains(dash + "\t", stdout);
        // Before: --shard-count 2 without JOB_COMPLETION_INDEX ran a full, unsharded eval with no message.
        (rc, _, stderr) = InProcessCli.Run("eval", "--data", fixture.Data, "--checkpoint", fixture.Checkpoint, "--shard-count", "2", "--out", Path.Combine(_dir, "s"));
        Assert.Equal(1, rc);
        Assert.Contains("--shard-count 2 needs this process's shard index", stderr);
        Assert.False(Directory.Exists(Path.Combine(_dir, "s")));
        // A value out of range is a usage error like a malformed one (exit 1, as the README's table says).
        (rc, _, stderr) = InProcessCli.Run("eval", "--data", fixture.Data, "--checkpoint", fixture.Checkpoint, "--threads", "0", "--out", Path.Combine(_dir, "s"));
        Assert.Equal(1, rc);
        Assert.Contains("--threads must be >= 1, got 0", stderr);
    }

    [Fact]
    public void CategoriesAreNeverSkippedSilently()
    {
        // A dataset with a category the checkpoint lacks, a category with a test split only and a folder that is neither.
        string data = Path.Combine(_dir, "data");
        FastCheckpointFixture.Copy(fixture.Data, data);
        FastCheckpointFixture.Copy(Path.Combine(fixture.Data, "washer", "test"), Path.Combine(data, "testonly", "test"));
        Directory.CreateDirectory(Path.Combine(data, "junk", "images"));
        var (rc, _, stderr) = InProcessCli.Run("eval", "--data", data, "--checkpoint", fixture.Checkpoint, "--masks", "Prototype", "--out", Path.Combine(_dir, "r"));
        Assert.True(rc == 0, stderr);
        Assert.Contains("skipped categories testonly, weave of the dataset: not fitted in checkpoint", stderr);
        Assert.Contains("ignored folder(s) junk: neither train/good nor test/ inside", stderr);
        var results = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "r", "results.json")))!;
        Assert.Contains("testonly, weave", results.ToJsonString());
        // Named explicitly, a category the checkpoint lacks is an error, not a skip.
        (rc, _, stderr) = InProcessCli.Run("eval", "--data", data, "--checkpoint", fixture.Checkpoint, "--categories", "weave", "--out", Path.Combine(_dir, "r2"));
        Assert.Equal(2, rc);
        Assert.Contains("category weave was not fitted in checkpoint", stderr);
        // A fit skips the category without a training split, saying so; named, it is an error.
        var fit = new List<string> { "fit", "--data", data, "--shots", "1", "--unet-steps", "0", "--autoencoder-steps", "0", "--calibrate", "off",
                                     "--analysis-size", "64", "--out", Path.Combine(_dir, "c") };
        (rc, _, stderr) = InProcessCli.Run([.. fit]);
        Assert.True(rc == 0, stderr);
        Assert.Contains("skipped category testonly: no training split (train/good) to fit on", stderr);
        (rc, _, stderr) = InProcessCli.Run([.. fit.Take(fit.Count - 2), "--categories", "testonly", "--out", Path.Combine(_dir, "c2")]);
        Assert.Equal(2, rc);
        Assert.Contains("category testonly of", stderr);
        Assert.False(Directory.Exists(Path.Combine(_dir, "c2")));
    }

    [Fact]
    public void MergeRefusesShardsOfDifferentDataAndNamesWhatDiffers()
    {
        // Before: shard 0/2 of one dataset plus shard 1/2 of another gave a report over a mix of both, exit 0.
        string other = Path.Combine(_dir, "other");
        FastCheckpointFixture.Copy(fixture.Data, other);
        File.Delete(Directory.EnumerateFiles(Path.Combine(other, "washer", "test"), "*.png", SearchOption.AllDirectories).Order(StringComparer.Ordinal).Last());
        string[] common = ["eval", "--checkpoint", fixture.Checkpoint, "--masks", "Prototype"];
        string s0 = Path.Combine(_dir, "s0"), s1 = Path.Combine(_dir, "s1"), s1other = Path.Combine(_dir, "s1other"), s1seed = Path.Combine(_dir, "s1seed");
        Assert.Equal(0, InProcessCli.Run([.. common, "--data", fixture.Data, "--shard", "0/2", "--out", s0]).Rc);
        Assert.Equal(0, InProcessCli.Run([.. common, "--data", fixture.Data, "--shard", "1/2", "--out", s1]).Rc);
        Assert.Equal(0, InProcessCli.Run([.. common, "--data", other, "--shard", "1/2", "--out", s1other]).Rc);
        Assert.Equal(0, InProcessCli.Run([.. common, "--data", fixture.Data, "--shard", "1/2", "--seed", "1", "--out", s1seed]).Rc);
        Assert.Equal(0, InProcessCli.Run("merge", s0, s1, "--out", Path.Combine(_dir, "good")).Rc);
        var (rc, _, stderr) = InProcessCli.Run("merge", s0, s1other, "--out", Path.Combine(_dir, "m"));
        Assert.Equal(2, rc);
        Assert.Contains("data_fingerprint is", stderr);
        Assert.Contains($"they scored different test images (data '{other}' vs '{fixture.Data}')", stderr);
        Assert.False(Directory.Exists(Path.Combine(_dir, "m")));
        // Manifests that differ only in the seed: the message names the key and both values (before: two identical prefixes).
        (rc, _, stderr) = InProcessCli.Run("merge", s0, s1seed, "--out", Path.Combine(_dir, "m"));
        Assert.Equal(2, rc);
        Assert.Contains("options.seed is 1 there and 0 here", stderr);
        // A missing folder is named as missing (before: "has no manifest.json").
        (rc, _, stderr) = InProcessCli.Run("merge", s0, Path.Combine(_dir, "nope"), "--out", Path.Combine(_dir, "m"));
        Assert.Equal(2, rc);
        Assert.Contains($"shard folder '{Path.Combine(_dir, "nope")}' does not exist", stderr);
        // A shard_index of the wrong type, and a scores.jsonl cut mid-line: the file and the key or line are named.
        string broken = Path.Combine(_dir, "broken");
        FastCheckpointFixture.Copy(s1, broken);
        string manifest = Path.Combine(broken, "manifest.json");
        File.WriteAllText(manifest, File.ReadAllText(manifest).Replace("\"shard_index\": 1", "\"shard_index\": \"1\""));
        (rc, _, stderr) = InProcessCli.Run("merge", s0, broken, "--out", Path.Combine(_dir, "m"));
        Assert.Equal(2, rc);
        Assert.Contains($"{manifest}: \"shard_index\" must be a whole number, got the string \"1\"", stderr);
        Directory.Delete(broken, recursive: true);
        FastCheckpointFixture.Copy(s1, broken);
        string scores = Path.Combine(broken, "scores.jsonl");
        string text = File.ReadAllText(scores);
        int cutAt = text.Length - 5, line = text[..cutAt].Count(c => c == '\n') + 1;
        File.WriteAllText(scores, text[..cutAt]);
        (rc, _, stderr) = InProcessCli.Run("merge", s0, broken, "--out", Path.Combine(_dir, "m"));
        Assert.Equal(2, rc);
        Assert.Contains($"{scores}: line {line}: not valid JSON", stderr);
    }
}
