using System.Diagnostics;
using AnomalySD.Data;
using AnomalySD.Checkpoints;
using AnomalySD.IO;
using AnomalySD.Training;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

[Verb("fit", HelpText = "Fine-tune one model for all categories on K shots each and write a checkpoint.")]
public sealed class FitVerb : FitFlags
{
    [Option("out", Required = true, HelpText = "Checkpoint folder to write.")]
    public string Out { get; set; } = "";

    public override void Validate()
    {
        base.Validate();
        RequireOneDevice("fit");
        string? scoring = GivenScoringFlags().FirstOrDefault();
        Require(scoring is null, $"{scoring} is a scoring flag: give it to eval or detect, not to fit");
        RequireDataApartFrom(Out);
    }
}

public static class FitCommand
{
    public static int Run(FitVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("fit");
        // The checkpoint folder is claimed (refused if it holds anything else), locked and cleaned of what killed fits left, before any work.
        using var output = OutputFolder.Open(o.Out, OutputKind.Checkpoint);
        CheckpointStore.Reclaim(output, log);
        var dataset = Datasets.Open(o.Data!);
        var categories = FitFlags.FitCategories(o.Categories, dataset, log);
        var watch = Stopwatch.StartNew();
        var (model, meta) = Fitting.Fit(dataset, categories, o.ToFitOptions(), log, CliSupport.Progress());
        using (model)
        {
            string version = CheckpointStore.Publish(output, dir => model.Save(dir, meta.ToJson()), log);
            log.LogInformation("checkpoint written to {Out} (version {Version}, {Seconds:F0} s)", o.Out, version, watch.Elapsed.TotalSeconds);
        }
        output.Complete();
        return 0;
    }
}
