using System.Text.Json.Nodes;
using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Detection;
using AnomalySD.Evaluation;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>Scale-out: shards by a stable hash, an exact merge, and several engines in one process.</summary>
[Collection(NativeCollection.Name)]
public sealed class ShardingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-shards-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ShardsComeFromTheSchedulersEnvironment()
    {
        Assert.Equal(new ShardSpec(2, 5), ShardSpec.Parse("2/5"));
        foreach (string bad in new[] { "5/5", "-1/3", "1", "a/b", "1/0" })
            Assert.Contains("must be I/N", Assert.Throws<ArgumentException>(() => ShardSpec.Parse(bad)).Message);
        Dictionary<string, string?> env = new();
        string? Env(string k) => env.GetValueOrDefault(k);
        Assert.Null(ShardSpec.FromEnvironment(null, Env));
        env["JOB_COMPLETION_INDEX"] = "3";
        Assert.Contains("--shard-count", Assert.Throws<ArgumentException>(() => ShardSpec.FromEnvironment(null, Env)).Message);
        Assert.Equal(new ShardSpec(3, 4), ShardSpec.FromEnvironment(4, Env));
        Assert.Throws<ArgumentException>(() => ShardSpec.FromEnvironment(3, Env));
        env.Clear();
        env["SLURM_ARRAY_TASK_ID"] = "7";
        env["SLURM_ARRAY_TASK_MIN"] = "5";
        env["SLURM_ARRAY_TASK_COUNT"] = "4";
        Assert.Equal(new ShardSpec(2, 4), ShardSpec.FromEnvironment(null, Env));
        // The partition is a stable hash of the path: the same for every process, and a partition.
        var paths = Enumerable.Range(0, 200).Select(i => $"bottle/test/good/{i:000}.png").ToList();
        var counts = Enumerable.Range(0, 3).Select(i => paths.Count(p => new ShardSpec(i, 3).Contains(p))).ToList();
        Assert.Equal(200, counts.Sum());
        Assert.All(counts, c => Assert.InRange(c, 40, 100));
        Assert.Equal(0xcbf2_9ce4_8422_2325UL, ShardSpec.Hash("")); // FNV-1a 64: the offset basis for the empty string
        Assert.Equal(0xaf63_dc4c_8601_ec8cUL, ShardSpec.Hash("a")); // the published test vector
        Assert.Equal(0x8594_4171_f739_67e8UL, ShardSpec.Hash("foobar"));
    }

    [Fact]
    public void AShardReplacesOnlyAPreviousShard()
    {
        // A folder of something else is refused before any work, and left as it was.
        string other = Path.Combine(_dir, "report");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "results.json"), "{}");
        Assert.Contains("is not empty and is not an evaluation shard", Assert.Throws<IOException>(() => new ShardWriter(other)).Message);
        Assert.Equal(["results.json"], Directory.GetFiles(other).Select(Path.GetFileName));
        Assert.Empty(Directory.GetDirectories(_dir, ".report.staging-*"));
        // A previous shard is replaced as a whole.
        string shard = Path.Combine(_dir, "shard");
        using (var w = new ShardWriter(shard)) w.Commit(new JsonObject { ["shard_index"] = 0, ["shard_count"] = 2, ["categories"] = new JsonArray() });
        File.WriteAllText(Path.Combine(shard, "stale.txt"), "x");
        using (var w = new ShardWriter(shard)) w.Commit(new JsonObject { ["shard_index"] = 1, ["shard_count"] = 2, ["categories"] = new JsonArray() });
        Assert.False(File.Exists(Path.Combine(shard, "stale.txt")));
        Assert.Equal(1, JsonNode.Parse(File.ReadAllText(Path.Combine(shard, "manifest.json")))!["shard_index"]!.GetValue<int>());
        Assert.Equal(["report", "shard"], Directory.GetDirectories(_dir).Select(Path.GetFileName).Order());  // no staging left
    }

    private FitVerb TinyFit(string ckpt, int seed = 5) => new()
    {
        Data = TestPaths.Shared("data"), Categories = "bottle,pcb", Shots = 1, Model = "compact", AnalysisSize = 64, UnetSteps = 5, AutoencoderSteps = 5,
        BatchSize = 2, Out = ckpt, Seed = (ulong)seed, Calibrate = "off",
    };

    private EvalVerb TinyEval(string ckpt, string outDir, string? shard = null, string device = "cpu", int steps = 10) => new()
    {
        Data = TestPaths.Shared("data"), Checkpoint = ckpt, Out = outDir, Shard = shard, Device = device, Scales = "1,2",
        NumInferenceSteps = steps, MaxImages = 6, Seed = 3,
    };

    [Fact]
    public void ThreeShardsAndMergeGiveTheUnshardedMetrics()
    {
        string ckpt = Path.Combine(_dir, "ckpt");
        Assert.Equal(0, FitCommand.Run(TinyFit(ckpt)));
        string single = Path.Combine(_dir, "single");
        Assert.Equal(0, EvalCommand.Run(TinyEval(ckpt, single)));
        var shards = Enumerable.Range(0, 3).Select(i => Path.Combine(_dir, $"shard{i}")).ToList();
        for (int i = 0; i < 3; i++) Assert.Equal(0, EvalCommand.Run(TinyEval(ckpt, shards[i], $"{i}/3")));
        foreach (var s in shards) Assert.True(File.Exists(Path.Combine(s, "manifest.json")));
        Assert.Equal(12, shards.Sum(s => File.ReadAllLines(Path.Combine(s, "scores.jsonl")).Length));
        string merged = Path.Combine(_dir, "merged");
        Assert.Equal(0, MergeCommand.Run(new MergeVerb { Shards = shards, Out = merged }));
        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(single, "results.json")))!;
        var b = JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "results.json")))!;
        foreach (string category in new[] { "bottle", "pcb", "mean" })
        {
            var ra = category == "mean" ? a["mean"]! : a["categories"]![category]!;
            var rb = category == "mean" ? b["mean"]! : b["categories"]![category]!;
            Assert.Equal(ra["images"]!.GetValue<int>(), rb["images"]!.GetValue<int>());
            foreach (string metric in new[] { "image_auroc", "image_ap", "image_f1_max" })
                Assert.Equal(ra[metric]?.GetValue<double>(), rb[metric]?.GetValue<double>());
            foreach (string metric in new[] { "pixel_auroc", "pixel_f1_max", "pro" })
                Assert.Equal(ra[metric]!.GetValue<double>(), rb[metric]!.GetValue<double>(), 1e-12);
        }
        Assert.True(File.Exists(Path.Combine(merged, "report.md")));
        Assert.True(File.Exists(Path.Combine(merged, "roc_bottle.png")));

        // A missing shard is named; a shard that died before committing left no folder merge accepts.
        var e = Assert.Throws<InvalidDataException>(() => MergeCommand.Run(new MergeVerb { Shards = shards.Take(2), Out = Path.Combine(_dir, "m2") }));
        Assert.Contains("missing shard 2/3", e.Message);
        string killed = Path.Combine(_dir, "killed");
        Directory.CreateDirectory(killed);
        File.Copy(Path.Combine(shards[2], "scores.jsonl"), Path.Combine(killed, "scores.jsonl"));
        e = Assert.Throws<InvalidDataException>(() => MergeCommand.Run(new MergeVerb { Shards = [shards[0], shards[1], killed], Out = Path.Combine(_dir, "m3") }));
        Assert.Contains("is not a complete shard", e.Message);
        using (var writer = new ShardWriter(Path.Combine(_dir, "never")))
            writer.Add(new ImageRecord("bottle", 0, new Sample("bottle", "x.png", false, "good", null), 1, null, [0f], [0], 1, 1));
        Assert.False(Directory.Exists(Path.Combine(_dir, "never")));
        Assert.Empty(Directory.GetDirectories(_dir, ".never*"));

        // A shard's folder copied under another index would count its images twice.
        string copy = Path.Combine(_dir, "copy");
        Directory.CreateDirectory(Path.Combine(copy, "maps"));
        foreach (string f in Directory.GetFiles(shards[0], "*", SearchOption.AllDirectories)) File.Copy(f, Path.Combine(copy, Path.GetRelativePath(shards[0], f)));
        var copied = JsonNode.Parse(File.ReadAllText(Path.Combine(copy, "manifest.json")))!;
        copied["shard_index"] = 2;
        File.WriteAllText(Path.Combine(copy, "manifest.json"), copied.ToJsonString());
        e = Assert.Throws<InvalidDataException>(() => MergeCommand.Run(new MergeVerb { Shards = [shards[0], shards[1], copy], Out = Path.Combine(_dir, "m5") }));
        Assert.Contains("is in more than one shard", e.Message);

        // Shards of other options, or of another checkpoint, are refused.
        string other = Path.Combine(_dir, "other-steps");
        Assert.Equal(0, EvalCommand.Run(TinyEval(ckpt, other, "2/3", steps: 8)));
        e = Assert.Throws<InvalidDataException>(() => MergeCommand.Run(new MergeVerb { Shards = [shards[0], shards[1], other], Out = Path.Combine(_dir, "m4") }));
        Assert.Contains("options.num_inference_steps is 8 there and 10 here", e.Message);
        string ckpt2 = Path.Combine(_dir, "ckpt2");
        Assert.Equal(0, FitCommand.Run(TinyFit(ckpt2, seed: 6)));
        string otherCkpt = Path.Combine(_dir, "other-ckpt");
        Assert.Equal(0, EvalCommand.Run(TinyEval(ckpt2, otherCkpt, "2/3")));
        e = Assert.Throws<InvalidDataException>(() => MergeCommand.Run(new MergeVerb { Shards = [shards[0], shards[1], otherCkpt], Out = Path.Combine(_dir, "m5") }));
        Assert.Contains("checkpoint_fingerprint is", e.Message);
        // A shard must not fit.
        Assert.Contains("a shard never fits", Assert.Throws<ArgumentException>(() => new EvalVerb { Data = "x", Out = "y", Shard = "0/2" }.Validate()).Message);
    }

    [Fact]
    public void TwoCpuEnginesGiveTheScoresOfOne()
    {
        string ckpt = Path.Combine(_dir, "ckpt");
        Assert.Equal(0, FitCommand.Run(TinyFit(ckpt)));
        var log = NullLogger.Instance;
        var dataset = Datasets.Open(TestPaths.Shared("data"));
        var request = new ScoringRequest(Scales: [1, 2], NumInferenceSteps: 10, Seed: 3);
        using var single = Detector.Open(ckpt, new DetectorSettings(["cpu"], new ScoringBackbones(), request), log);
        using var pair = Detector.Open(ckpt, new DetectorSettings(["cpu", "cpu"], new ScoringBackbones(), request), log);
        {
            List<ImageRecord> Scores(Detector detector)
            {
                var records = new List<ImageRecord>();
                Evaluator.Run(detector, dataset, ["bottle"], log, null, new EvaluationOptions(6, 64, OnRecord: records.Add));
                return records;
            }
            var one = Scores(single);
            var two = Scores(pair);
            Assert.Equal(one.Select(r => r.Index), two.Select(r => r.Index)); // accumulated in index order either way
            for (int i = 0; i < one.Count; i++)
                Assert.True(Math.Abs(one[i].Score - two[i].Score) <= 1e-6 * Math.Max(1, Math.Abs(one[i].Score)), $"image {i}: {one[i].Score} vs {two[i].Score}");
        }
    }
}
