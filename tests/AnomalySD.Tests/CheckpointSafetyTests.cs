using System.Globalization;
using System.Text.Json.Nodes;
using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Checkpoints;
using AnomalySD.IO;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

/// <summary>
/// Output folders and checkpoints under real processes (issue: robustness, round 2, items 1-3, 9 and 12): fit never writes into
/// a folder that holds something else; readers of a checkpoint that fit replaces see the old model or the new one, never a mix;
/// a shard records the fingerprint of the checkpoint it loaded; a killed fit leaves a whole checkpoint and the next fit
/// reclaims what it left.
/// </summary>
[Collection(NativeCollection.Name)]
public sealed class CheckpointSafetyTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-safety-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A small synthetic MVTec-layout dataset (weave, washer; 64 px).</summary>
    private string Data(int testPerDefect = 1)
    {
        string root = Path.Combine(_dir, "data");
        if (!Directory.Exists(root)) SyntheticDataset.Write(root, size: 64, train: 2, testGood: 2, testPerDefect: testPerDefect, seed: 1);
        return root;
    }

    /// <summary>The flags of a fit that takes a few seconds: no training, no calibration, analysis at 64 px.</summary>
    private static string[] FastFit(string data, string outDir, int seed) =>
        ["fit", "--data", data, "--categories", "washer", "--shots", "1", "--shot-seed", seed.ToString(CultureInfo.InvariantCulture), "--unet-steps", "0",
         "--autoencoder-steps", "0", "--calibrate", "off", "--analysis-size", "64", "--seed", seed.ToString(CultureInfo.InvariantCulture), "--out", outDir];

    private static void FitInProcess(string data, string outDir, int seed)
    {
        var fit = new FitVerb
        {
            Data = data, Categories = "washer", Shots = 1, ShotSeed = seed, UnetSteps = 0, AutoencoderSteps = 0, Calibrate = "off",
            AnalysisSize = 64, Seed = (ulong)seed, Out = outDir,
        };
        fit.Validate();
        Assert.Equal(0, FitCommand.Run(fit));
    }

    private string Probe(string data) => Directory.EnumerateFiles(Path.Combine(data, "washer", "test"), "*.png", SearchOption.AllDirectories).Order(StringComparer.Ordinal).First();

    private string Signature(string checkpoint, string probe)
    {
        using var p = new ProcessRunner(ProcessRunner.Probe, ["signature", checkpoint, probe]);
        Assert.True(p.Wait() == 0, p.Stderr);
        return p.Stdout.Trim().Split(' ')[1];
    }

    [Fact]
    public void VerbsRefuseOutputFoldersThatHoldSomethingElseAndTouchNothing()
    {
        string data = Data();
        // Before: fit --out u deleted u/notes.txt and u/sub/, exit 0; with --out equal to --data, the dataset.
        string u = Path.Combine(_dir, "u");
        Directory.CreateDirectory(Path.Combine(u, "sub"));
        File.WriteAllText(Path.Combine(u, "notes.txt"), "x");
        File.WriteAllText(Path.Combine(u, "sub", "keep.txt"), "y");
        var (rc, _, err) = ProcessRunner.RunCli(FastFit(data, u, 1));
        Assert.Equal(2, rc);
        Assert.Contains($"output folder '{u}' is not empty and is not an AnomalySD checkpoint: it holds notes.txt, sub/", err);
        Assert.Equal("x", File.ReadAllText(Path.Combine(u, "notes.txt")));
        Assert.Equal("y", File.ReadAllText(Path.Combine(u, "sub", "keep.txt")));
        Assert.Equal(["notes.txt", "sub"], Directory.EnumerateFileSystemEntries(u).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        // --out equal to, inside or around --data: a usage error before any work, the dataset untouched.
        int files = Directory.EnumerateFiles(data, "*", SearchOption.AllDirectories).Count();
        foreach (var (outDir, says) in new[] { (data, $"is --data '{data}'"), (Path.Combine(data, "washer", "ckpt"), "is inside --data"), (_dir, "contains --data") })
        {
            (rc, _, err) = ProcessRunner.RunCli(FastFit(data, outDir, 1));
            Assert.Equal(1, rc);
            Assert.Contains(says, err);
        }
        Assert.Equal(files, Directory.EnumerateFiles(data, "*", SearchOption.AllDirectories).Count());
        Assert.False(Directory.Exists(Path.Combine(data, "washer", "ckpt")));

        // The same rule for every verb that writes a folder: a report, a shard, detect's pictures.
        string ckpt = Path.Combine(_dir, "ckpt");
        FitInProcess(data, ckpt, 1);
        (rc, _, err) = ProcessRunner.RunCli("eval", "--data", data, "--checkpoint", ckpt, "--out", u);
        Assert.Equal(2, rc);
        Assert.Contains("is not empty and is not an AnomalySD evaluation report", err);
        (rc, _, err) = ProcessRunner.RunCli("eval", "--data", data, "--checkpoint", ckpt, "--shard", "0/2", "--out", u);
        Assert.Equal(2, rc);
        Assert.Contains("is not empty and is not an evaluation shard", err);
        (rc, _, err) = ProcessRunner.RunCli("detect", "--checkpoint", ckpt, "--category", "washer", "--out", u, Probe(data));
        Assert.Equal(2, rc);
        Assert.Contains("is not empty and is not the pictures of an earlier detect --out", err);
        (rc, _, err) = ProcessRunner.RunCli("detect", "--checkpoint", ckpt, "--category", "washer", "--out", Path.Combine(data, "washer", "pics"), Path.Combine(data, "washer"));
        Assert.Equal(1, rc);
        Assert.Contains("is inside input", err);
        (rc, _, err) = ProcessRunner.RunCli("eval", "--data", data, "--checkpoint", ckpt, "--out", ckpt);
        Assert.Equal(2, rc);
        Assert.Contains("holds an AnomalySD checkpoint", err);
        Assert.Equal("x", File.ReadAllText(Path.Combine(u, "notes.txt")));
        Assert.Equal(["notes.txt", "sub"], Directory.EnumerateFileSystemEntries(u).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        // A run that fails leaves no folder it created (before: an empty --out).
        string fresh = Path.Combine(_dir, "never");
        (rc, _, _) = ProcessRunner.RunCli("eval", "--data", data, "--checkpoint", Path.Combine(_dir, "missing"), "--out", fresh);
        Assert.Equal(2, rc);
        Assert.False(Directory.Exists(fresh));
    }

    [Fact]
    public void ReadersOfACheckpointThatIsReplacedTwoHundredTimesSeeOnlyWholeModels()
    {
        // Before: a reader loading while fit renamed the new folder into place got scores of neither model. Now one writer process
        // publishes A, B, A, ... 200 times into one folder while two reader processes load it in a loop; every load must give
        // exactly A's or B's signature (metadata, banks, UNet/VAE/text weights).
        string data = Data(), a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b"), x = Path.Combine(_dir, "x"), stop = Path.Combine(_dir, "stop");
        FitInProcess(data, a, 1);
        FitInProcess(data, b, 2);
        string probe = Probe(data), sigA = Signature(a, probe), sigB = Signature(b, probe);
        Assert.NotEqual(sigA, sigB);
        using var writer = new ProcessRunner(ProcessRunner.Probe, ["publish", x, a, b, "200"]);
        Assert.True(writer.WaitFor("publish 0 "), writer.Stderr);
        using var reader1 = new ProcessRunner(ProcessRunner.Probe, ["read", x, probe, stop]);
        using var reader2 = new ProcessRunner(ProcessRunner.Probe, ["read", x, probe, stop]);
        Assert.True(writer.Wait() == 0, writer.Stderr);
        File.WriteAllText(stop, "");
        Assert.True(reader1.Wait() == 0, reader1.Stderr);
        Assert.True(reader2.Wait() == 0, reader2.Stderr);

        static List<string[]> Lines(string text, string kind) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => l.StartsWith(kind + " ", StringComparison.Ordinal)).Select(l => l.Split(' ')).ToList();
        var publishes = Lines(writer.Stdout, "publish").Select(p => (Start: long.Parse(p[2], CultureInfo.InvariantCulture), End: long.Parse(p[3], CultureInfo.InvariantCulture))).ToList();
        var reads = Lines(reader1.Stdout, "read").Concat(Lines(reader2.Stdout, "read"))
            .Select(r => (Start: long.Parse(r[1], CultureInfo.InvariantCulture), End: long.Parse(r[2], CultureInfo.InvariantCulture), Signature: r[3])).ToList();
        Assert.Equal(200, publishes.Count);
        var mixed = reads.Where(r => r.Signature != sigA && r.Signature != sigB).ToList();
        Assert.True(mixed.Count == 0, $"{mixed.Count} of {reads.Count} loads gave a model that is neither A nor B");
        Assert.Contains(reads, r => r.Signature == sigA);
        Assert.Contains(reads, r => r.Signature == sigB);
        // Interleavings: (load, publish) pairs that ran at the same time.
        int overlapping = reads.Sum(r => publishes.Count(p => p.Start < r.End && r.Start < p.End));
        output.WriteLine($"{publishes.Count} publishes, {reads.Count} loads, {overlapping} overlapping (load, publish) pairs, 0 mixed");
        Assert.True(overlapping >= 200, $"only {overlapping} loads overlapped a publish");
        // What stays: CURRENT, its version, and at most the versions a reader held at the last publish (kept, never deleted under
        // a reader); the next publish, with no reader, leaves CURRENT and its version alone.
        Assert.All(OutputFolder.VisibleEntries(x), e => Assert.True(e == CheckpointStore.PointerFile || e.StartsWith('v'), e));
        Assert.InRange(OutputFolder.VisibleEntries(x).Count, 2, 4);
        using (var last = new ProcessRunner(ProcessRunner.Probe, ["publish", x, a, b, "1"])) Assert.True(last.Wait() == 0, last.Stderr);
        Assert.Equal([CheckpointStore.PointerFile, File.ReadAllText(Path.Combine(x, CheckpointStore.PointerFile)).Trim()],
                     OutputFolder.VisibleEntries(x));
    }

    [Fact]
    public void RealFitsReplacingACheckpointUnderAReaderGiveOnlyWholeModels()
    {
        // The same with the CLI: two `anomalysd fit` processes replace the checkpoint while a reader process loads it in a loop.
        // Their models are fitted once more into folders of their own first: every load must be one of the three.
        string data = Data(), x = Path.Combine(_dir, "x"), stop = Path.Combine(_dir, "stop"), probe = Probe(data);
        FitInProcess(data, x, 1);
        var expected = new List<string> { Signature(x, probe) };
        for (int seed = 2; seed <= 3; seed++)
        {
            var (rc, _, err) = ProcessRunner.RunCli(FastFit(data, Path.Combine(_dir, $"m{seed}"), seed));
            Assert.True(rc == 0, err);
            expected.Add(Signature(Path.Combine(_dir, $"m{seed}"), probe));
        }
        Assert.Equal(3, expected.Distinct().Count());
        using var reader = new ProcessRunner(ProcessRunner.Probe, ["read", x, probe, stop]);
        Assert.True(reader.WaitFor("read "), reader.Stderr);
        for (int seed = 2; seed <= 3; seed++)
        {
            var (rc, _, err) = ProcessRunner.RunCli(FastFit(data, x, seed));
            Assert.True(rc == 0, err);
        }
        Assert.True(reader.WaitFor($" {expected[2]} "), reader.Stderr);
        File.WriteAllText(stop, "");
        Assert.Equal(0, reader.Wait());
        var seen = reader.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("read ", StringComparison.Ordinal))
                         .Select(l => l.Split(' ')[3]).ToList();
        output.WriteLine($"{seen.Count} loads: {string.Join(", ", expected.Select(e => $"{seen.Count(s => s == e)} of {e}"))}");
        Assert.All(seen, s => Assert.Contains(s, expected));
        Assert.Contains(expected[0], seen);
        Assert.Equal(expected[2], Signature(x, probe));
    }

    [Fact]
    public void AShardRecordsTheFingerprintOfTheCheckpointItLoadedNotOfItsReplacement()
    {
        // Before: the fingerprint was taken at the end of the run, so a shard scored with the old model recorded the new one's.
        string data = Data(testPerDefect: 4), x = Path.Combine(_dir, "x"), shard = Path.Combine(_dir, "s0");
        FitInProcess(data, x, 1);
        string oldFingerprint;
        using (var lease = CheckpointStore.OpenForRead(x)) oldFingerprint = lease.Fingerprint;
        using var eval = new ProcessRunner(ProcessRunner.Cli, ["eval", "--data", data, "--checkpoint", x, "--shard", "0/1", "--out", shard,
                                                                  "--masks", "MultiScale", "--scales", "1,2,4", "--num-inference-steps", "20", "--noise-strength", "1"]);
        Assert.True(eval.WaitFor("loaded "), eval.Stderr);
        FitInProcess(data, x, 2);
        Assert.False(eval.HasExited, "the shard finished before the checkpoint was replaced: the test proves nothing");
        Assert.True(eval.Wait() == 0, eval.Stderr);
        string newFingerprint;
        using (var lease = CheckpointStore.OpenForRead(x)) newFingerprint = lease.Fingerprint;
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(shard, "manifest.json")))!;
        Assert.NotEqual(oldFingerprint, newFingerprint);
        Assert.Equal(oldFingerprint, manifest["checkpoint_fingerprint"]!.GetValue<string>());
    }

    [Fact]
    public void AKilledFitLeavesAWholeCheckpointAndTheNextFitRemovesWhatItLeftAndSaysSo()
    {
        string data = Data(), x = Path.Combine(_dir, "x");
        FitInProcess(data, x, 1);
        var rng = new Random(3);
        for (int kill = 0; kill < 4; kill++)
        {
            using var fit = new ProcessRunner(ProcessRunner.Cli, FastFit(data, x, 10 + kill));
            Assert.True(fit.WaitFor("washer: 1 shot"), fit.Stderr);
            Thread.Sleep(rng.Next(0, 1500));
            fit.Kill();
            // Whatever the moment, the folder is a whole checkpoint: it loads.
            using var lease = CheckpointStore.OpenForRead(x);
            var (model, meta) = CheckpointLoader.Load(lease, "cpu", new ScoringBackbones(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            model.Dispose();
            Assert.Equal("washer", meta.Categories.Single().Category);
        }
        // What the earlier engine left when killed, beside the folder, and what a killed fit leaves inside it.
        Directory.CreateDirectory(Path.Combine(_dir, ".x.staging-123", "unet"));
        Directory.CreateDirectory(Path.Combine(_dir, ".x.previous-456"));
        Directory.CreateDirectory(Path.Combine(x, ".v20260101T000000000-0badcafe.staging-77"));
        var (rc, _, err) = ProcessRunner.RunCli(FastFit(data, x, 20));
        Assert.True(rc == 0, err);
        Assert.Contains("removed '" + Path.Combine(_dir, ".x.staging-123"), err);
        Assert.Contains("removed '" + Path.Combine(_dir, ".x.previous-456"), err);
        Assert.Contains(".v20260101T000000000-0badcafe.staging-77, left by a fit that was interrupted", err);
        Assert.False(Directory.Exists(Path.Combine(_dir, ".x.staging-123")));
        Assert.False(Directory.Exists(Path.Combine(_dir, ".x.previous-456")));
        Assert.Equal([CheckpointStore.PointerFile, File.ReadAllText(Path.Combine(x, CheckpointStore.PointerFile)).Trim()], OutputFolder.VisibleEntries(x));
        Assert.Empty(Directory.EnumerateDirectories(x, ".*"));
    }
}
