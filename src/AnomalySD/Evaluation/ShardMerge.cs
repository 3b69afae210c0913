using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.IO;
using AnomalySD.Native;

namespace AnomalySD.Evaluation;

/// <summary>A shard folder read back, its manifest checked value by value.</summary>
/// <param name="Index">Its shard index.</param>
/// <param name="Skipped">The images it skipped (unreadable), as paths.</param>
/// <param name="SkippedPerCategory">How many images it skipped, per category.</param>
/// <param name="SecondsPerCategory">Its scoring time per category.</param>
/// <param name="WallSeconds">Its process's wall time.</param>
public sealed record ShardData(string Folder, JsonObject Manifest, IReadOnlyList<ImageRecord> Records, int Index, IReadOnlyList<string> Skipped,
                               IReadOnlyDictionary<string, int> SkippedPerCategory, IReadOnlyDictionary<string, double> SecondsPerCategory, double WallSeconds);

/// <summary>
/// Merges the folders of an N-shard evaluation: every manifest must agree on everything but the shard index and its own counts
/// (the checkpoint's fingerprint, the test split's fingerprint, the options, the categories, the calibration), and shards 0..N-1
/// must all be present exactly once (missing, duplicated and mismatched shards are named, a mismatch by its first differing
/// key). The records are then accumulated per category in index order, exactly as one process accumulates them, so image
/// metrics are identical and pixel metrics and PRO equal to the last bit.
/// </summary>
public static class ShardMerge
{
    /// <summary>The manifest keys every shard of one evaluation shares.</summary>
    public static readonly string[] SharedKeys = ["checkpoint_fingerprint", "data_fingerprint", "options", "shard_count", "categories", "calibration"];

    /// <exception cref="InvalidDataException">a folder is not a complete shard, shards are missing, duplicated or disagree.</exception>
    /// <exception cref="DirectoryNotFoundException">a folder does not exist.</exception>
    public static (JsonObject Manifest, IReadOnlyList<ShardData> Shards) Check(IReadOnlyList<string> folders)
    {
        if (folders.Count == 0) throw new InvalidDataException("merge needs the shard folders");
        var manifests = folders.Select(f => (Folder: f, Manifest: ReadManifest(f))).ToList();
        var reference = manifests[0];
        int count = Input(reference.Folder, reference.Manifest)["shard_count"].Int(1);
        foreach (var (folder, m) in manifests.Skip(1))
            foreach (string key in SharedKeys)
                if (FirstDifference(key, reference.Manifest[key], m[key]) is { } diff)
                    throw new InvalidDataException($"shard '{folder}' does not match shard '{reference.Folder}': {diff.Path} is {diff.Theirs} there and {diff.Ours} here; " +
                                                   (key == "data_fingerprint" ? $"they scored different test images (data '{m["data"]}' vs '{reference.Manifest["data"]}')"
                                                                              : "shards must come from one checkpoint, one dataset and one set of options"));
        var indexed = manifests.Select(m => (m.Folder, m.Manifest, Index: Input(m.Folder, m.Manifest)["shard_index"].Int(0))).ToList();
        var byIndex = indexed.GroupBy(m => m.Index).ToDictionary(g => g.Key, g => g.ToList());
        var duplicated = byIndex.Where(kv => kv.Value.Count > 1).Select(kv => $"shard {kv.Key} given {kv.Value.Count} times ({string.Join(", ", kv.Value.Select(v => v.Folder))})").ToList();
        if (duplicated.Count > 0) throw new InvalidDataException(string.Join("; ", duplicated));
        var outOfRange = byIndex.Keys.Where(i => i >= count).ToList();
        if (outOfRange.Count > 0) throw new InvalidDataException($"shard index {string.Join(", ", outOfRange)} is outside 0..{count - 1}");
        var missing = Enumerable.Range(0, count).Where(i => !byIndex.ContainsKey(i)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"missing shard{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing.Select(i => $"{i}/{count}"))} of {count}: run {(missing.Count > 1 ? "them" : "it")} (or rerun a failed one) before merging");
        var shards = manifests.Select(m => Read(m.Folder, m.Manifest)).ToList();
        // Each image belongs to exactly one shard (a shard folder copied under another index would count images twice).
        var twice = shards.SelectMany(s => s.Records.Select(r => (r.Category, r.Index, s.Folder))).GroupBy(t => (t.Category, t.Index))
                          .FirstOrDefault(g => g.Count() > 1);
        if (twice is not null)
            throw new InvalidDataException($"image {twice.Key.Index} of '{twice.Key.Category}' is in more than one shard ({string.Join(", ", twice.Select(t => t.Folder))})");
        return (reference.Manifest, shards);
    }

    private static JsonInput Input(string folder, JsonObject manifest) => new(Path.Combine(folder, "manifest.json"), "", manifest);

    /// <summary>The first place where two JSON values differ, as a key path ("options.seed") and both values (cut short).</summary>
    public static (string Path, string Ours, string Theirs)? FirstDifference(string path, JsonNode? ours, JsonNode? theirs)
    {
        if (ours is JsonObject a && theirs is JsonObject b)
        {
            foreach (string key in a.Select(kv => kv.Key).Union(b.Select(kv => kv.Key)).Order(StringComparer.Ordinal))
                if (FirstDifference($"{path}.{key}", a[key], b[key]) is { } d) return d;
            return null;
        }
        if (ours is JsonArray x && theirs is JsonArray y && x.Count == y.Count)
        {
            for (int i = 0; i < x.Count; i++)
                if (FirstDifference($"{path}[{i}]", x[i], y[i]) is { } d) return d;
            return null;
        }
        string s = ours?.ToJsonString() ?? "absent", t = theirs?.ToJsonString() ?? "absent";
        return s == t ? null : (path, JsonInput.Cut(s), JsonInput.Cut(t));
    }

    /// <summary>A shard folder's manifest.json, checked to be this format and version.</summary>
    /// <exception cref="DirectoryNotFoundException">no such folder.</exception>
    /// <exception cref="InvalidDataException">a file instead of a folder, no manifest (an unfinished shard), invalid JSON, or another format or version.</exception>
    public static JsonObject ReadManifest(string folder)
    {
        if (File.Exists(folder)) throw new InvalidDataException($"shard '{folder}' is a file; a shard is the folder that eval --shard --out writes");
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"shard folder '{folder}' does not exist");
        string path = Path.Combine(folder, "manifest.json");
        if (!File.Exists(path))
            throw new InvalidDataException($"'{folder}' is not a complete shard: it has no manifest.json (a shard that did not finish leaves only a hidden .staging folder; rerun it)");
        var j = JsonInput.Parse(path, File.ReadAllText(path));
        var m = j.Object();
        if (j["format"].OptionalString() != ShardWriter.Format || !j["format_version"].Exists || j["format_version"].Int() != ShardWriter.FormatVersion)
            throw new InvalidDataException($"{path}: not an AnomalySD evaluation shard of format version {ShardWriter.FormatVersion}");
        j["shard_index"].Int(0);
        j["shard_count"].Int(1);
        j["categories"].Items().ToList().ForEach(c => c.String());
        return m;
    }

    /// <summary>Reads a shard's records (scores and lossless maps) and its counts.</summary>
    /// <exception cref="InvalidDataException">a value missing, mistyped or out of range, naming the file and the line or key.</exception>
    public static ShardData Read(string folder, JsonObject manifest)
    {
        var j = Input(folder, manifest);
        var records = new List<ImageRecord>();
        var maps = new Dictionary<string, TensorMap>();
        string scores = Path.Combine(folder, "scores.jsonl");
        try
        {
            int line = 0;
            foreach (string text in File.ReadLines(scores))
            {
                line++;
                if (text.Length == 0) continue;
                var r = JsonInput.Parse(scores, text, $"line {line}");
                r.Object();
                string category = r["category"].String();
                int index = r["index"].Int(0);
                if (!maps.TryGetValue(category, out var map)) maps[category] = map = TensorMap.Load(Path.Combine(folder, "maps", ShardWriter.MapFile(category)));
                var info = map.Info($"{index}.map");
                var sample = new Sample(category, r["file"].String(), r["label"].Int(0, 1) == 1, r["defect_type"].OptionalString() ?? "", r["mask_file"].OptionalString());
                records.Add(new ImageRecord(category, index, sample, r["score"].Double(), r["normalized"].OptionalDouble(),
                    map.GetFloat32($"{index}.map"), Array.ConvertAll(map.GetFloat32($"{index}.mask"), v => v != 0 ? (byte)1 : (byte)0),
                    (int)info.Shape[0], (int)info.Shape[1]));
            }
        }
        catch (Exception e) when (e is KeyNotFoundException or AsdException or IOException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"shard '{folder}' is corrupt: {e.Message}", e);
        }
        finally
        {
            foreach (var m in maps.Values) m.Dispose();
        }
        int expected = j["images"].Exists ? j["images"].Members().Sum(kv => kv.Value.Int(0)) : 0;
        if (records.Count != expected) throw new InvalidDataException($"shard '{folder}' is corrupt: its manifest counts {expected} images, scores.jsonl has {records.Count}");
        var skipped = j["skipped"].Exists ? j["skipped"].Items().Select(x => x.String()).ToList() : [];
        var skippedPer = j["skipped_per_category"].Exists ? j["skipped_per_category"].Members().ToDictionary(kv => kv.Key, kv => kv.Value.Int(0)) : [];
        var seconds = j["seconds_per_category"].Exists ? j["seconds_per_category"].Members().ToDictionary(kv => kv.Key, kv => kv.Value.Double(0)) : [];
        return new ShardData(folder, manifest, records, j["shard_index"].Int(0), skipped, skippedPer, seconds, j["wall_seconds"].OptionalDouble(0) ?? 0);
    }
}
