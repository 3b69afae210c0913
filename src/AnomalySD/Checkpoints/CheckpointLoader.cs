using AnomalySD.Detection;
using AnomalySD.Engine;
using AnomalySD.IO;
using AnomalySD.Training;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Checkpoints;

/// <summary>Loads checkpoints for scoring: the model, its metadata, every category's condition and the scoring backbones.</summary>
public static class CheckpointLoader
{
    /// <summary>Loads a checkpoint written by <c>fit</c> for one device: the model, every category's condition and the scoring
    /// backbones, all from the version <paramref name="lease"/> holds (<see cref="CheckpointStore"/>).</summary>
    /// <exception cref="InvalidDataException">not a fitted AnomalySD checkpoint, or a metadata value missing, mistyped or out of range (naming the file and key).</exception>
    /// <exception cref="FileNotFoundException">the prototype banks of a fitted checkpoint, or the ResNet18 weights, are missing.</exception>
    public static (InpaintingModel Model, CheckpointMetadata Metadata) Load(CheckpointLease lease, string device, ScoringBackbones backbones, ILogger log)
    {
        string path = lease.Folder;
        var model = InpaintingModel.Load(path, device);
        try
        {
            var meta = CheckpointMetadata.FromJson(new JsonInput(Path.Combine(path, CheckpointStore.ManifestFile), "metadata", model.Info()["metadata"]));
            string banks = Path.Combine(path, "prototype_banks.safetensors");
            if (meta.Shots > 0 && !File.Exists(banks))
                throw new FileNotFoundException($"checkpoint '{lease.Root}' was fitted with {meta.Shots} shot(s) but its prototype banks file '{banks}' is missing", banks);
            var tokenizer = Fitting.TokenizerFor(Directory.Exists(Path.Combine(path, "tokenizer")) ? path : meta.ModelSource, meta.Tokenizer,
                                                 meta.TokenizerDir, meta.PadToken);
            foreach (var c in meta.Categories) model.SetCategory(c.Category, tokenizer.EncodePadded(c.All), tokenizer.MaxLength);
            var distance = meta.Distance == "lpips_alex" ? DistanceKind.LpipsAlex : DistanceKind.Resnet18Uniform;
            Fitting.ConfigureScoring(model, backbones with { Distance = distance }, meta.FeatureAggregation);
            log.LogInformation("loaded {Path}{Version}: {Count} categories, inpainting {Size} px, analysis {Analysis} px, window context {Window}", lease.Root,
                               lease.Version is null ? "" : $" (version {lease.Version})", meta.Categories.Count, meta.ImageSize, meta.AnalysisSize, meta.WindowContext);
            return (model, meta);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Loads the current version of the checkpoint <paramref name="path"/> for one device (<see cref="Load(CheckpointLease, string, ScoringBackbones, ILogger)"/>).</summary>
    public static (InpaintingModel Model, CheckpointMetadata Metadata) Load(string path, string device, ScoringBackbones backbones, ILogger log)
    {
        using var lease = CheckpointStore.OpenForRead(path);
        return Load(lease, device, backbones, log);
    }

    /// <summary>The model alone (no scoring set-up) of a diffusers folder or of an AnomalySD checkpoint (its current version, read under a
    /// lease): what <c>--model</c> names for fit and bench.</summary>
    public static InpaintingModel LoadModel(string folder, string device, ModelDtype dtype)
    {
        if (!File.Exists(Path.Combine(folder, CheckpointStore.PointerFile))) return InpaintingModel.Load(folder, device, dtype);
        using var lease = CheckpointStore.OpenForRead(folder);
        return InpaintingModel.Load(lease.Folder, device, dtype);
    }
}
