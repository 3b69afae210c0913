using System.Text.Json.Nodes;
using AnomalySD.Calibration;
using AnomalySD.Evaluation;
using AnomalySD.IO;
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

    /// <summary>--out may not be a shard folder, inside one or around one.</summary>
    public void Validate()
    {
        foreach (string shard in Shards) PathGuard.Separate(Out, "--out", shard, "shard folder");
    }
}

public static class MergeCommand
{
    public static int Run(MergeVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("merge");
        var folders = o.Shards.ToList();
        var (manifest, shards) = ShardMerge.Check(folders);
        using var output = OutputFolder.Open(o.Out, OutputKind.Report);
        var categories = manifest["categories"]!.AsArray().Select(c => c!.GetValue<string>()).ToList();
        var records = shards.SelectMany(s => s.Records).GroupBy(r => r.Category)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<ImageRecord>)g.OrderBy(r => r.Index).ToList());
        var calibration = new Dictionary<string, CategoryCalibration>();
        var calibrationJson = new JsonInput(Path.Combine(shards[0].Folder, "manifest.json"), "calibration", manifest["calibration"]);
        if (calibrationJson.Exists)
            foreach (var (category, value) in calibrationJson.Members()) calibration[category] = CategoryCalibration.FromJson(value);
        var skippedPerCategory = categories.ToDictionary(c => c, c => shards.Sum(s => s.SkippedPerCategory.GetValueOrDefault(c)));
        var seconds = categories.ToDictionary(c => c, c => shards.Sum(s => s.SecondsPerCategory.GetValueOrDefault(c)));
        var skipped = shards.SelectMany(s => s.Skipped).ToList();
        var result = Evaluator.FromRecords(categories, records, calibration, skippedPerCategory, skipped, seconds);
        var run = (JsonObject)manifest["options"]!.DeepClone();
        run["checkpoint"] = manifest["checkpoint"]?.DeepClone();
        run["checkpoint_fingerprint"] = manifest["checkpoint_fingerprint"]?.DeepClone();
        run["data"] = manifest["data"]?.DeepClone();
        run["shards"] = $"{shards.Count} merged ({string.Join(", ", shards.Select(s => $"{s.Index}: {s.Records.Count} images, {s.WallSeconds:F0} s"))})";
        run["restoration_check"] = "not run in sharded evaluations";
        output.Replace(dir => ReportWriter.Write(dir, result, run));
        output.Complete();
        log.LogInformation("merged {Count} shards: {Images} images", shards.Count, result.Mean.Images);
        Console.WriteLine(ReportWriter.Table(result));
        Console.WriteLine($"report: {Path.Combine(o.Out, "report.md")}");
        if (skipped.Count == 0) return 0;
        Console.Error.WriteLine($"anomalysd: the shards skipped {skipped.Count} image(s) (listed in results.json); the metrics cover the rest");
        return 3;
    }
}
