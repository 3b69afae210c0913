using System.Diagnostics;
using AnomalySD.Data;
using AnomalySD.Pipeline;
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
    }
}

public static class FitCommand
{
    public static int Run(FitVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("fit");
        if (o.Data is null) throw new ArgumentException("--data is required");
        var dataset = Datasets.Open(o.Data);
        var categories = FitFlags.SelectCategories(o.Categories, dataset);
        var watch = Stopwatch.StartNew();
        var (model, meta) = Fitting.Fit(dataset, categories, o.ToFitOptions(), log, CliSupport.Progress());
        using (model)
        {
            model.Save(o.Out, meta.ToJson());
        }
        log.LogInformation("checkpoint written to {Out} ({Seconds:F0} s)", o.Out, watch.Elapsed.TotalSeconds);
        return 0;
    }
}
