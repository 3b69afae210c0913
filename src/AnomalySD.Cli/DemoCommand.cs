using AnomalySD.Data;
using CommandLine;

namespace AnomalySD.Cli;

[Verb("demo", HelpText = "Write a small synthetic MVTec-layout dataset, fit the compact model on one shot per class, evaluate and print the metrics.")]
public sealed class DemoVerb : EngineFlags
{
    [Option("out", Default = "anomalysd-demo", HelpText = "Folder for the dataset (data/), the checkpoint (model/) and the report (report/).")]
    public string Out { get; set; } = "anomalysd-demo";

    [Option("image-size", Default = 64, HelpText = "Resolution of the synthetic images and of the model.")]
    public int ImageSize { get; set; } = 64;

    [Option("unet-steps", Default = 200, HelpText = "UNet fine-tuning steps.")]
    public int UnetSteps { get; set; } = 200;

    [Option("autoencoder-steps", Default = 200, HelpText = "Autoencoder training steps.")]
    public int AutoencoderSteps { get; set; } = 200;
}

public static class DemoCommand
{
    public static int Run(DemoVerb o)
    {
        string data = Path.Combine(o.Out, "data");
        SyntheticDataset.Write(data, o.ImageSize, seed: (int)o.Seed);
        Console.WriteLine($"synthetic dataset written to {data} (weave: texture, washer: object; defects scratch, hole, stain)");
        var eval = new EvalVerb
        {
            Data = data, Shots = 1, Model = "compact", ImageSize = o.ImageSize, UnetSteps = o.UnetSteps, AutoencoderSteps = o.AutoencoderSteps,
            Out = Path.Combine(o.Out, "report"), Seed = o.Seed, Device = o.Device, Verbose = o.Verbose, BatchSize = 8, LearningRate = 1e-4,
        };
        return EvalCommand.Run(eval);
    }
}
