using System.Diagnostics;
using AnomalySD.Engine;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

[Verb("convert", HelpText = "Convert a single-file SD checkpoint (FILE.safetensors or FILE.ckpt, original layout) to a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json; safetensors in the file's dtype).")]
public sealed class ConvertVerb
{
    [Option("model", Required = true, HelpText = "The single-file checkpoint (.safetensors, or a PyTorch zip .ckpt read by a restricted unpickler).")]
    public string Model { get; set; } = "";

    [Option("model-config", HelpText = "A diffusers-layout folder whose unet/, vae/, text_encoder/ hold config.json (weights there ignored), for files that are not a standard SD model.")]
    public string? ModelConfig { get; set; }

    [Option("prediction-type", HelpText = "What the UNet predicts: epsilon (default, SD inpainting), v_prediction or sample; written to scheduler/.")]
    public string? PredictionType { get; set; }

    [Option("tokenizer", HelpText = "A folder with the CLIP tokenizer files (vocab.json, merges.txt); default: <model-config>/tokenizer, tokenizer/ beside the file, $ANOMALYSD_TOKENIZER, else the bundled CLIP BPE.")]
    public string? Tokenizer { get; set; }

    [Option("out", Required = true, HelpText = "The diffusers folder to write (atomically). An existing non-empty folder is refused unless convert wrote it.")]
    public string Out { get; set; } = "";

    [Option("verbose", HelpText = "Debug logging.")]
    public bool Verbose { get; set; }

    /// <summary>Checks the flags before any work; throws ArgumentException naming the flag.</summary>
    public void Validate()
    {
        if (Directory.Exists(Model)) throw new ArgumentException($"--model '{Model}' is a folder: convert takes a single-file checkpoint (a diffusers folder needs no conversion)");
        if (!File.Exists(Model)) throw new ArgumentException($"--model '{Model}' does not exist");
        if (ModelConfig is not null && !Directory.Exists(ModelConfig)) throw new ArgumentException($"--model-config '{ModelConfig}' is not a folder");
        if (PredictionType is not null && !SingleFileOptions.PredictionTypes.Contains(PredictionType))
            throw new ArgumentException($"--prediction-type '{PredictionType}' must be one of {string.Join(", ", SingleFileOptions.PredictionTypes)}");
        if (File.Exists(Out)) throw new ArgumentException($"--out '{Out}' is a file, not a folder");
    }
}

public static class ConvertCommand
{
    public static int Run(ConvertVerb o)
    {
        o.Validate();
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("convert");
        string tokenizer = SingleFileCheckpoint.ResolveTokenizer(o.Model, o.Tokenizer, o.ModelConfig);
        var watch = Stopwatch.StartNew();
        SingleFileCheckpoint.Convert(o.Model, o.Out, new SingleFileOptions(o.ModelConfig, o.PredictionType, tokenizer));
        string? detected = null;
        try { detected = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(o.Out, "model_index.json")))?["_anomalysd_detected"]?.GetValue<string>(); }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException) { }
        log.LogInformation("{Model} ({Detected}) -> diffusers folder {Out} ({Seconds:F1} s; tokenizer from {Tokenizer})", o.Model, detected, o.Out,
                           watch.Elapsed.TotalSeconds, tokenizer);
        return 0;
    }
}
