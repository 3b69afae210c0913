using AnomalySD.Data;
using AnomalySD.IO;
using CommandLine;

namespace AnomalySD.Cli;

[Verb("demo", HelpText = "Write a small synthetic MVTec-layout dataset, fit the compact model on one shot per class, evaluate and print the metrics.")]
public sealed class DemoVerb : EngineFlags
{
    [Option("out", Default = "anomalysd-demo", HelpText = "Folder for the dataset (data/), the checkpoint (model/) and the report (report/).")]
    public string Out { get; set; } = "anomalysd-demo";

    [Option("image-size", Default = 128, HelpText = "Resolution of the synthetic images, and the analysis resolution (the model inpaints at 64).")]
    public int ImageSize { get; set; } = 128;

    [Option("unet-steps", Default = 200, HelpText = "UNet fine-tuning steps.")]
    public int UnetSteps { get; set; } = 200;

    [Option("autoencoder-steps", Default = 200, HelpText = "Autoencoder training steps.")]
    public int AutoencoderSteps { get; set; } = 200;

    public override void Validate()
    {
        base.Validate();
        RequireOneDevice("demo");
        Require(ImageSize >= 64 && ImageSize % 32 == 0, $"--image-size must be a multiple of 32, at least 64, got {ImageSize}");
        Require(UnetSteps >= 0 && AutoencoderSteps >= 0, "--unet-steps and --autoencoder-steps must be >= 0");
    }
}

public static class DemoCommand
{
    public static int Run(DemoVerb o)
    {
        using var folder = OutputFolder.Open(o.Out, OutputKind.Demo); // refused if it holds anything but an earlier demo
        string data = Path.Combine(o.Out, "data");
        SyntheticDataset.Write(data, o.ImageSize, seed: (int)o.Seed);
        Console.WriteLine($"synthetic dataset written to {data} (weave: texture, washer: object; defects scratch, hole, stain)");
        var eval = new EvalVerb
        {
            Data = data, Shots = 1, Model = "compact", AnalysisSize = o.ImageSize, UnetSteps = o.UnetSteps, AutoencoderSteps = o.AutoencoderSteps,
            Out = Path.Combine(o.Out, "report"), Seed = o.Seed, Device = o.Device, Verbose = o.Verbose, BatchSize = 8, LearningRate = 1e-4,
        };
        eval.Validate();
        int rc = EvalCommand.Run(eval);
        folder.Complete();
        return rc;
    }
}
