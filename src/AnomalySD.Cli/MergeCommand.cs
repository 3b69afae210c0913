using System.Text.Json.Nodes;
using AnomalySD.Pipeline;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

[Verb("merge", HelpText = "Merge the folders of a sharded eval (eval --shard I/N) into one report: results.json, report.md, ROC PNGs and pictures.")]
public sealed class MergeVerb
{
    [Value(0, MetaName = "shards", Required = true, HelpText = "The shard folders (all N of them).")]
    public IEnumerable<string> Shards { get; set; } = [];

    [Option("out", Required = true, HelpText = "Report folder.")]
    public string Out { get; set; } = "";

    [Option("verbose", HelpText = "Debug logging.")]
    public bool Verbose { get; set; }
}

public static class MergeCommand
{
    public static int Run(MergeVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("merge");
        var folders = o.Shards.ToList();
        using var output = OutputFolder.Open(o.Out);
        var (manifest, shards) = ShardMerge.Check(folders);
        var categories = manifest["categories"]!.AsArray().Select(c => c!.GetValue<string>()).ToList();
        var records = shards.SelectMany(s => s.Records).GroupBy(r => r.Category)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<ImageRecord>)g.OrderBy(r => r.Index).ToList());
        var calibration = (manifest["calibration"] as JsonObject ?? []).ToDictionary(kv => kv.Key, kv => CategoryCalibration.FromJson(kv.Value!));
        var skippedPerCategory = categories.ToDictionary(c => c, c => shards.Sum(s => s.Manifest["skipped_per_category"]?[c]?.GetValue<int>() ?? 0));
        var seconds = categories.ToDictionary(c => c, c => shards.Sum(s => s.Manifest["seconds_per_category"]?[c]?.GetValue<double>() ?? 0));
        var skipped = shards.SelectMany(s => s.Manifest["skipped"]?.AsArray().Select(x => x!.GetValue<string>()) ?? []).ToList();
        var result = Evaluation.FromRecords(categories, records, calibration, skippedPerCategory, skipped, seconds);
        var run = (JsonObject)manifest["options"]!.DeepClone();
        run["checkpoint"] = manifest["checkpoint"]?.DeepClone();
        run["checkpoint_fingerprint"] = manifest["checkpoint_fingerprint"]?.DeepClone();
        run["shards"] = $"{shards.Count} merged ({string.Join(", ", shards.Select(s => $"{s.Manifest["shard_index"]}: {s.Records.Count} images, {s.Manifest["wall_seconds"]?.GetValue<double>():F0} s"))})";
        run["restoration_check"] = "not run in sharded evaluations";
        ReportWriter.Write(output.Path, result, run);
        log.LogInformation("merged {Count} shards: {Images} images", shards.Count, result.Mean.Images);
        Console.WriteLine(ReportWriter.Table(result));
        Console.WriteLine($"report: {Path.Combine(o.Out, "report.md")}");
        return 0;
    }
}
