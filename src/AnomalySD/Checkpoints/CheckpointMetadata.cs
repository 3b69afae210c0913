using System.Text.Json.Nodes;
using AnomalySD.Calibration;
using AnomalySD.Detection;
using AnomalySD.IO;
using AnomalySD.Prompts;
using AnomalySD.Training;

namespace AnomalySD.Checkpoints;

/// <summary>What a checkpoint records besides weights: categories with their prompts and λ, resolution, options.</summary>
/// <param name="ImageSize">The inpainting resolution P.</param>
public sealed record CheckpointMetadata(int ImageSize, string ModelSource, int Shots, string Distance, IReadOnlyList<CategoryPrompts> Categories,
                                        IReadOnlyDictionary<string, IReadOnlyList<string>> ShotPaths, string Tokenizer)
{
    private readonly int _analysisSize;
    private readonly int? _evalSize;

    /// <summary>The fit options the checkpoint was trained with (steps, batch size, learning rate, seed, precision...), as JSON; null if unknown.</summary>
    public JsonObject? FitOptions { get; init; }

    /// <summary>Analysis resolution A (<see cref="Resolutions"/>); checkpoints written before it existed: the inpainting resolution.</summary>
    public int AnalysisSize { get => _analysisSize > 0 ? _analysisSize : ImageSize; init => _analysisSize = value; }

    /// <summary>Default evaluation resolution (0 = original size); older checkpoints: the inpainting resolution, as they were evaluated.</summary>
    public int EvalSize { get => _evalSize ?? ImageSize; init => _evalSize = value; }

    /// <summary>Inpainting window context; older checkpoints: full (the paper's, as they were scored).</summary>
    public WindowContext WindowContext { get; init; } = WindowContext.Full;

    /// <summary>Where D of a window is computed; older checkpoints: at the analysis resolution (as they were scored).</summary>
    public DistanceResolution DistanceResolution { get; init; } = DistanceResolution.Analysis;

    /// <summary>PatchCore local aggregation the prototype banks were built with (1 = off).</summary>
    public int FeatureAggregation { get; init; } = 1;

    /// <summary>The CLIP tokenizer folder and pad token of a model fitted from a single file (which carries no tokenizer); null otherwise.</summary>
    public string? TokenizerDir { get; init; }
    public string? PadToken { get; init; }

    /// <summary>Per-category calibration made at fit time (empty: none, the paper's fixed values; older checkpoints have none).</summary>
    public IReadOnlyDictionary<string, CategoryCalibration> Calibration { get; init; } = new Dictionary<string, CategoryCalibration>();

    public JsonObject ToJson() => new()
    {
        ["image_size"] = ImageSize,
        ["analysis_size"] = AnalysisSize,
        ["eval_size"] = EvalSize,
        ["window_context"] = WindowContext.ToString(),
        ["distance_resolution"] = DistanceResolution == DistanceResolution.Inpainting ? "inpainting" : "analysis",
        ["feature_aggregation"] = FeatureAggregation,
        ["calibration"] = Calibration.Count == 0 ? null : new JsonObject(Calibration.Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value.ToJson()))),
        ["model_source"] = ModelSource,
        ["shots"] = Shots,
        ["distance"] = Distance,
        ["tokenizer"] = Tokenizer,
        ["tokenizer_dir"] = TokenizerDir,
        ["tokenizer_pad_token"] = PadToken,
        ["fit_options"] = FitOptions?.DeepClone(),
        ["categories"] = new JsonArray(Categories.Select(c => (JsonNode)new JsonObject
        {
            ["name"] = c.Category,
            ["display_name"] = c.Name,
            ["coarse"] = new JsonArray(c.Coarse.Select(p => (JsonNode)JsonValue.Create(p)!).ToArray()),
            ["fine"] = new JsonArray(c.Fine.Select(p => (JsonNode)JsonValue.Create(p)!).ToArray()),
            ["noise_strength"] = c.NoiseStrength,
            ["object_type"] = c.ObjectType == ObjectType.Texture ? "texture" : "object",
            ["shot_paths"] = new JsonArray((ShotPaths.GetValueOrDefault(c.Category) ?? []).Select(p => (JsonNode)JsonValue.Create(p)!).ToArray()),
        }).ToArray()),
    };

    /// <summary>Reads checkpoint metadata from JSON that came from <paramref name="source"/> (<see cref="FromJson(JsonInput)"/>).</summary>
    public static CheckpointMetadata FromJson(JsonObject? j, string source) => FromJson(new JsonInput(source, "metadata", j));

    /// <summary>Reads the metadata of a checkpoint, validating every value with the rules of its flag (<see cref="OptionRules"/>).</summary>
    /// <param name="j">The "metadata" object of the checkpoint's anomalysd.json, with its location (file and key) for errors.</param>
    /// <exception cref="InvalidDataException">a value is missing, of the wrong type or out of range (the message names the file and the key).</exception>
    public static CheckpointMetadata FromJson(JsonInput j)
    {
        j.Object();
        var fit = j["fit_options"];
        if (fit.Exists) fit.Object();
        string modelSource = j["model_source"].OptionalString() ?? "";
        int imageSize = j["image_size"].Int();
        j["image_size"].Checked(imageSize, OptionRules.InpaintSize(imageSize));
        // The weights run only at the resolution they were trained at: an edited image_size is refused, not run silently.
        if (fit["image_size"].Exists && fit["model"].OptionalString() is string fitModel)
        {
            int trained = fit["image_size"].Int(0);
            if (trained == 0) trained = Resolutions.DefaultInpaintSize(string.Equals(fitModel, "compact", StringComparison.OrdinalIgnoreCase));
            if (trained != imageSize)
                throw j["image_size"].Error($"is {imageSize}, but the weights were trained at {trained} px (\"{fit.Path}.image_size\"); the model runs only at its training resolution");
        }
        // Checkpoints written since the analysis and evaluation resolutions exist record both (their fit options carry the
        // keys); only older ones fall back to the inpainting resolution.
        int? analysis = Resolved(j["analysis_size"], fit["analysis_size"].Exists, OptionRules.AnalysisSize);
        int? evalSize = Resolved(j["eval_size"], fit["eval_size"].Exists, OptionRules.EvalSize);
        string distance = OneOf(j["distance"], "resnet18_uniform", "resnet18_uniform", "lpips_alex");
        string tokenizer = OneOf(j["tokenizer"], "hash", "hash", "clip");
        int shots = j["shots"].Exists ? j["shots"].Int(0) : 0;
        var categories = new List<CategoryPrompts>();
        var shotPaths = new Dictionary<string, IReadOnlyList<string>>();
        var items = j["categories"].Items();
        if (items.Count == 0) throw j["categories"].Error("is empty: a fitted checkpoint has at least one category");
        foreach (var c in items)
        {
            string name = c["name"].String();
            if (name.Length == 0) throw c["name"].Error("is empty");
            if (shotPaths.ContainsKey(name)) throw c["name"].Error($"repeats category '{name}'");
            double lambda = c["noise_strength"].Double();
            c["noise_strength"].Checked(lambda, OptionRules.NoiseStrength(lambda));
            categories.Add(new CategoryPrompts(name, c["display_name"].OptionalString() ?? name, Strings(c["coarse"]), Strings(c["fine"]), lambda,
                OneOf(c["object_type"], "object", "object", "texture") == "texture" ? ObjectType.Texture : ObjectType.Object, false));
            shotPaths[name] = c["shot_paths"].Exists ? Strings(c["shot_paths"]) : [];
        }
        var windowNode = j["window_context"];
        WindowContext window = Detection.WindowContext.Full;
        if (windowNode.Exists)
        {
            try { window = Detection.WindowContext.Parse(windowNode.String()); }
            catch (ArgumentException) { throw windowNode.Error($"must be 'full' or a number >= 0, got {windowNode.Describe()}"); }
        }
        int aggregation = j["feature_aggregation"].OptionalInt() ?? 1;
        j["feature_aggregation"].Checked(aggregation, OptionRules.FeatureAggregation(aggregation));
        var calibration = new Dictionary<string, CategoryCalibration>();
        if (j["calibration"].Exists)
            foreach (var (category, value) in j["calibration"].Members())
            {
                if (!shotPaths.ContainsKey(category)) throw value.Error($"calibrates category '{category}', which the checkpoint does not have");
                calibration[category] = CategoryCalibration.FromJson(value);
            }
        var meta = new CheckpointMetadata(imageSize, modelSource, shots, distance, categories, shotPaths, tokenizer)
        {
            FitOptions = fit.Exists ? (JsonObject)fit.Object().DeepClone() : null,
            TokenizerDir = j["tokenizer_dir"].OptionalString(),
            PadToken = j["tokenizer_pad_token"].OptionalString(),
            AnalysisSize = analysis ?? 0,
            WindowContext = window,
            FeatureAggregation = aggregation,
            DistanceResolution = OneOf(j["distance_resolution"], "analysis", "analysis", "inpainting") == "inpainting"
                ? Detection.DistanceResolution.Inpainting : Detection.DistanceResolution.Analysis,
            Calibration = calibration,
        };
        return evalSize is int e ? meta with { EvalSize = e } : meta;
    }

    /// <summary>An optional resolution: required when <paramref name="required"/>, checked by <paramref name="rule"/>.</summary>
    private static int? Resolved(JsonInput value, bool required, Func<long, string?> rule)
    {
        if (!value.Exists && !required) return null;
        int v = value.Int();
        return value.Checked(v, rule(v));
    }

    private static string OneOf(JsonInput value, string fallback, params string[] allowed)
    {
        string v = value.OptionalString() ?? fallback;
        return allowed.Contains(v) ? v : throw value.Error($"must be one of {string.Join(", ", allowed.Select(a => $"\"{a}\""))}, got \"{JsonInput.Cut(v)}\"");
    }

    private static List<string> Strings(JsonInput array) => array.Items().Select(i => i.String()).ToList();
}
