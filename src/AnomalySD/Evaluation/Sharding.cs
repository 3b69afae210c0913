using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.IO;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Evaluation;

/// <summary>
/// Shard <see cref="Index"/> of <see cref="Count"/>: the test images whose stable hash (FNV-1a 64 of the UTF-8 path relative to
/// the dataset root, '/' separated) is Index modulo Count. The same image always lands in the same shard, so a re-run or retried
/// shard scores exactly its images again, whatever machine or process runs it.
/// </summary>
public readonly record struct ShardSpec(int Index, int Count)
{
    /// <summary>"I/N" with 0 &lt;= I &lt; N.</summary>
    /// <exception cref="ArgumentException">anything else.</exception>
    public static ShardSpec Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int i) &&
            int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 && i < n)
            return new ShardSpec(i, n);
        throw new ArgumentException($"--shard '{text}' must be I/N with 0 <= I < N (e.g. 0/4)");
    }

    /// <summary>
    /// The shard a batch scheduler gave this process: Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX (the count comes from
    /// <paramref name="shardCount"/>, i.e. --shard-count, the Job's completions); Slurm job arrays set SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT (and SLURM_ARRAY_TASK_MIN, subtracted, for arrays that do not start at 0). Null when neither is set.
    /// </summary>
    /// <exception cref="ArgumentException">a variable that is set but not usable (naming it).</exception>
    public static ShardSpec? FromEnvironment(int? shardCount, Func<string, string?> env)
    {
        static int Number(string name, string value) => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int v)
            ? v : throw new ArgumentException($"environment variable {name}='{value}' is not a non-negative integer");
        if (env("JOB_COMPLETION_INDEX") is { Length: > 0 } k8s)
        {
            if (shardCount is not int n) throw new ArgumentException("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): give --shard-count, the Job's completions");
            return Checked(Number("JOB_COMPLETION_INDEX", k8s), n, "JOB_COMPLETION_INDEX");
        }
        if (env("SLURM_ARRAY_TASK_ID") is { Length: > 0 } slurm)
        {
            int id = Number("SLURM_ARRAY_TASK_ID", slurm);
            int min = env("SLURM_ARRAY_TASK_MIN") is { Length: > 0 } m ? Number("SLURM_ARRAY_TASK_MIN", m) : 0;
            int count = shardCount ?? (env("SLURM_ARRAY_TASK_COUNT") is { Length: > 0 } c ? Number("SLURM_ARRAY_TASK_COUNT", c)
                : throw new ArgumentException("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: give --shard-count"));
            return Checked(id - min, count, "SLURM_ARRAY_TASK_ID");
        }
        return null;
    }

    private static ShardSpec Checked(int index, int count, string source) =>
        count >= 1 && index >= 0 && index < count ? new ShardSpec(index, count)
            : throw new ArgumentException($"{source} gives shard {index} of {count}: the index must be in [0, {count})");

    public bool Contains(string relativePath) => Hash(relativePath) % (ulong)Count == (ulong)Index;

    /// <summary>FNV-1a 64 of the UTF-8 bytes (<see cref="StableHash.Fnv1a64(string)"/>).</summary>
    public static ulong Hash(string s) => StableHash.Fnv1a64(s);

    /// <summary><paramref name="path"/> relative to <paramref name="root"/>, with '/' separators.</summary>
    public static string RelativePath(string root, string path) => Path.GetRelativePath(Path.GetFullPath(root), Path.GetFullPath(path)).Replace('\\', '/');

    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>
/// The files of one evaluation shard, written into a staging folder and renamed into place only when complete, so a shard that
/// dies halfway leaves no folder that <see cref="ShardMerge"/> accepts:
/// <list type="bullet">
/// <item><c>scores.jsonl</c>: one JSON object per scored image: category, index, path (relative to the dataset root), label
/// (0 normal, 1 anomalous), defect type, raw score and normalised score (null without calibration);</item>
/// <item><c>maps/&lt;category&gt;.safetensors</c>: per image <c>&lt;index&gt;.map</c> (the smoothed map at the evaluation resolution,
/// float32, bit for bit) and <c>&lt;index&gt;.mask</c> (its ground truth, 0/1 in float16, exact): lossless, unlike a PNG;</item>
/// <item><c>manifest.json</c>, written last: format, the checkpoint's fingerprint, the scoring options, the shard index and
/// count, the categories, images and skipped files per category, the calibration used.</item>
/// </list>
/// </summary>
public sealed class ShardWriter : IDisposable
{
    public const string Format = "anomalysd-eval-shard";
    public const int FormatVersion = 1;
    private readonly string _out, _staging;
    private readonly StreamWriter _scores;
    private readonly Dictionary<string, TensorMap> _maps = new();
    private readonly Dictionary<string, int> _images = new();
    private bool _committed;

    private readonly string? _root;
    private readonly FileStream _lock;

    /// <param name="outDir">The shard's folder (replaced as a whole on commit; refused when it holds anything but a shard).</param>
    /// <param name="datasetRoot">Paths in scores.jsonl are written relative to it.</param>
    /// <param name="log">Says what an interrupted earlier run of this shard left and what was done with it.</param>
    /// <exception cref="IOException">--out is a file, or a folder that holds something other than a shard.</exception>
    public ShardWriter(string outDir, string? datasetRoot = null, ILogger? log = null)
    {
        _root = datasetRoot;
        _out = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar);
        if (File.Exists(_out)) throw new IOException($"shard folder '{outDir}' is a file; give a folder (--out)");
        string parent = Path.GetDirectoryName(_out)!;
        Directory.CreateDirectory(parent);
        ReclaimStale(parent, Path.GetFileName(_out), log);
        // Commit replaces the folder as a whole: only ever a previous shard, never a folder of something else.
        if (Directory.Exists(_out) && OutputFolder.VisibleEntries(_out).Count > 0)
        {
            try { ShardMerge.ReadManifest(_out); }
            catch (Exception e) when (e is InvalidDataException or InvalidOperationException or IOException)
            {
                throw new IOException($"output folder '{outDir}' is not empty and is not an evaluation shard ({e.Message}); a shard replaces its folder as a whole. Nothing was written; give a new or empty folder (--out)", e);
            }
        }
        _staging = Path.Combine(parent, $".{Path.GetFileName(_out)}.staging-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path.Combine(_staging, "maps"));
        // Held while this process writes: a later run tells a live staging folder from one a killed run left.
        _lock = new FileStream(Path.Combine(_staging, OutputFolder.LockFileName), FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
        _scores = new StreamWriter(Path.Combine(_staging, "scores.jsonl"), append: false, new UTF8Encoding(false));
    }

    /// <summary>
    /// What killed runs of this shard left beside <paramref name="name"/>: staging folders that no live process holds are removed;
    /// a previous shard set aside by a commit that was interrupted (<c>….old</c>) is put back when the shard folder is missing,
    /// and removed otherwise. Each is logged.
    /// </summary>
    private static void ReclaimStale(string parent, string name, ILogger? log)
    {
        string target = Path.Combine(parent, name);
        foreach (string dir in Directory.EnumerateDirectories(parent, $".{name}.staging-*").Order(StringComparer.Ordinal))
        {
            if (dir.EndsWith(".old", StringComparison.Ordinal))
            {
                if (!Directory.Exists(target))
                {
                    Directory.Move(dir, target);
                    log?.LogWarning("shard folder '{Target}' was missing after an interrupted commit: restored the previous shard from '{Dir}'", target, dir);
                }
                else
                {
                    Directory.Delete(dir, recursive: true);
                    log?.LogWarning("removed '{Dir}', a previous shard left by an interrupted commit", dir);
                }
                continue;
            }
            try
            {
                using (new FileStream(Path.Combine(dir, OutputFolder.LockFileName), FileMode.Open, FileAccess.ReadWrite, FileShare.None)) { }
            }
            catch (FileNotFoundException) { } // killed before it locked: stale
            catch (DirectoryNotFoundException) { continue; }
            catch (IOException) { continue; } // a live run of the same shard holds it
            Directory.Delete(dir, recursive: true);
            log?.LogWarning("removed '{Dir}', left by a run of this shard that was interrupted", dir);
        }
    }

    public void Add(ImageRecord r)
    {
        var line = new JsonObject
        {
            ["category"] = r.Category, ["index"] = r.Index, ["path"] = _root is null ? r.Sample.ImagePath : ShardSpec.RelativePath(_root, r.Sample.ImagePath),
            ["label"] = r.Sample.IsAnomalous ? 1 : 0, ["defect_type"] = r.Sample.DefectType, ["score"] = r.Score, ["normalized"] = r.Normalized,
            ["file"] = Path.GetFullPath(r.Sample.ImagePath), ["mask_file"] = r.Sample.MaskPath is null ? null : Path.GetFullPath(r.Sample.MaskPath),
        };
        _scores.WriteLine(line.ToJsonString());
        if (!_maps.TryGetValue(r.Category, out var map)) _maps[r.Category] = map = TensorMap.Create();
        map.SetFloat32($"{r.Index}.map", r.Map, [r.Height, r.Width]);
        map.SetFloat32($"{r.Index}.mask", Array.ConvertAll(r.Mask, v => (float)v), [r.Height, r.Width], TensorDtype.F16);
        _images[r.Category] = _images.GetValueOrDefault(r.Category) + 1;
    }

    /// <summary>Writes the maps and the manifest, then renames the staging folder to the output folder (replacing a previous one).</summary>
    public void Commit(JsonObject manifest)
    {
        _scores.Flush();
        _scores.Dispose();
        foreach (var (category, map) in _maps) map.Save(Path.Combine(_staging, "maps", MapFile(category)));
        manifest["format"] = Format;
        manifest["format_version"] = FormatVersion;
        manifest["images"] = new JsonObject(_images.Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value)));
        AtomicFile.WriteText(Path.Combine(_staging, "manifest.json"), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        _lock.Dispose(); // released (and removed) before the folder is renamed: Windows renames no folder with an open file in it
        File.Delete(Path.Combine(_staging, OutputFolder.LockFileName));
        string? old = null;
        if (Directory.Exists(_out))
        {
            old = _staging + ".old";
            Directory.Move(_out, old);
        }
        try
        {
            Directory.Move(_staging, _out);
        }
        catch when (old is not null)
        {
            Directory.Move(old, _out);  // the previous shard stays as it was
            throw;
        }
        if (old is not null) Directory.Delete(old, recursive: true);
        _committed = true;
    }

    /// <summary>The safetensors file of a category's maps (category names are folder names; anything else is escaped).</summary>
    public static string MapFile(string category) =>
        string.Concat(category.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '_' or '.' ? ch.ToString() : $"%{(int)ch:X2}")) + ".safetensors";

    public void Dispose()
    {
        if (!_committed)
        {
            _scores.Dispose();
            _lock.Dispose();
            try { Directory.Delete(_staging, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        foreach (var map in _maps.Values) map.Dispose();
    }

    /// <summary>
    /// A fingerprint of the test split a shard scores from: SHA-256 over every test image of <paramref name="categories"/> (its path
    /// relative to the dataset root, label, defect type and file size), in the dataset's order. Shards of one evaluation compute the
    /// same value wherever the dataset is mounted; shards of different datasets (or of an edited one) differ, and merge refuses them.
    /// </summary>
    public static string DataFingerprint(IDataset dataset, IEnumerable<string> categories)
    {
        using var total = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (string category in categories)
            foreach (var s in dataset.Test(category))
            {
                long size = File.Exists(s.ImagePath) ? new FileInfo(s.ImagePath).Length : -1;
                total.AppendData(Encoding.UTF8.GetBytes($"{category}\t{ShardSpec.RelativePath(dataset.Root, s.ImagePath)}\t{(s.IsAnomalous ? 1 : 0)}\t{s.DefectType}\t{size}\n"));
            }
        return Convert.ToHexString(total.GetHashAndReset()).ToLowerInvariant();
    }
}
