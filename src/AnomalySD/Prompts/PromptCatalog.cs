using System.Text.Json;
using System.Text.Json.Serialization;

namespace AnomalySD.Prompts;

/// <summary>Whether the automatic foreground mask m_f applies (objects) or the whole image is foreground (textures).</summary>
public enum ObjectType { Object, Texture }

/// <summary>
/// The hierarchical prompt set T_c = T¹_c ∪ T²_c of one category (paper section 4.1) and its inference noise strength λ
/// (section 4.2). <see cref="Coarse"/> is T¹ ("A perfect [c]."), <see cref="Fine"/> is T² (detailed normal appearance).
/// Fine-tuning draws one prompt of <see cref="All"/> at random; inference averages the embeddings of <see cref="All"/>.
/// </summary>
/// <param name="RotationInvariant">Whether a rotated or flipped normal image of this object is still normal (e.g. a bottle seen
/// from above): calibration augments with flips and rotations then. Textures always are.</param>
public sealed record CategoryPrompts(
    string Category, string Name, IReadOnlyList<string> Coarse, IReadOnlyList<string> Fine,
    double NoiseStrength, ObjectType ObjectType, bool IsFallback, bool RotationInvariant = false)
{
    public IReadOnlyList<string> All => [.. Coarse, .. Fine];
}

/// <summary>
/// Prompts and per-category λ from a JSON file (the built-in one covers the 15 MVTec AD and 12 VisA categories and
/// DeepPCB's <c>pcb</c>). Unknown categories get the file's <c>generic</c> entry with <c>{name}</c> replaced by the
/// category name (underscores as spaces).
/// File format: <c>{"default_noise_strength": 0.4, "generic": {"coarse": [...], "fine": [...], "object_type": "object"},
/// "categories": {"bottle": {"name": "bottle", "coarse": [...], "fine": [...], "noise_strength": 0.4, "object_type": "object"}}}</c>.
/// </summary>
public sealed class PromptCatalog
{
    private sealed class EntryDto
    {
        [JsonPropertyName("name")] public string? Name { get; set; }
        [JsonPropertyName("coarse")] public List<string>? Coarse { get; set; }
        [JsonPropertyName("fine")] public List<string>? Fine { get; set; }
        [JsonPropertyName("noise_strength")] public double? NoiseStrength { get; set; }
        [JsonPropertyName("object_type")] public string? ObjectType { get; set; }
        [JsonPropertyName("rotation_invariant")] public bool? RotationInvariant { get; set; }
    }

    private sealed class FileDto
    {
        [JsonPropertyName("default_noise_strength")] public double? DefaultNoiseStrength { get; set; }
        [JsonPropertyName("generic")] public EntryDto? Generic { get; set; }
        [JsonPropertyName("categories")] public Dictionary<string, EntryDto>? Categories { get; set; }
    }

    private readonly Dictionary<string, CategoryPrompts> _categories;
    private readonly EntryDto _generic;

    /// <summary>Where the catalog came from (a path or "built-in").</summary>
    public string Source { get; }
    public double DefaultNoiseStrength { get; }
    public IReadOnlyCollection<string> KnownCategories => _categories.Keys;

    private PromptCatalog(FileDto dto, string source)
    {
        Source = source;
        DefaultNoiseStrength = dto.DefaultNoiseStrength ?? 0.4;
        CheckStrength(DefaultNoiseStrength, "default_noise_strength");
        _generic = dto.Generic ?? throw new InvalidDataException($"{source}: missing 'generic' entry (the fallback for unknown categories)");
        if ((_generic.Coarse?.Count ?? 0) + (_generic.Fine?.Count ?? 0) == 0) throw new InvalidDataException($"{source}: 'generic' has no prompts");
        _categories = new(StringComparer.Ordinal);
        foreach (var (key, e) in dto.Categories ?? [])
            _categories[key] = Build(key, e, isFallback: false);
    }

    /// <summary>The built-in catalog.</summary>
    public static PromptCatalog BuiltIn()
    {
        using var stream = typeof(PromptCatalog).Assembly.GetManifestResourceStream("AnomalySD.Prompts.prompts.json")
            ?? throw new InvalidOperationException("built-in prompts.json resource is missing from the assembly");
        return Parse(stream, "built-in prompts.json");
    }

    /// <summary>Loads a user catalog. <exception cref="FileNotFoundException"/> / <exception cref="InvalidDataException"/> name the file.</summary>
    public static PromptCatalog Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"prompt file '{path}' does not exist", path);
        using var stream = File.OpenRead(path);
        return Parse(stream, path);
    }

    private static PromptCatalog Parse(Stream stream, string source)
    {
        FileDto? dto;
        try { dto = JsonSerializer.Deserialize<FileDto>(stream); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not a valid prompt file ({e.Message})", e); }
        return new PromptCatalog(dto ?? throw new InvalidDataException($"{source}: empty prompt file"), source);
    }

    /// <summary>The prompts of <paramref name="category"/>; the generic fallback for unknown ones (<see cref="CategoryPrompts.IsFallback"/>).</summary>
    public CategoryPrompts Get(string category) =>
        _categories.TryGetValue(category, out var p) ? p : Build(category, _generic, isFallback: true);

    private CategoryPrompts Build(string category, EntryDto e, bool isFallback)
    {
        string name = isFallback ? category.Replace('_', ' ') : e.Name ?? category.Replace('_', ' ');
        var coarse = (e.Coarse ?? []).Select(s => s.Replace("{name}", name)).ToList();
        var fine = (e.Fine ?? []).Select(s => s.Replace("{name}", name)).ToList();
        if (coarse.Count + fine.Count == 0) throw new InvalidDataException($"{Source}: category '{category}' has no prompts");
        double strength = e.NoiseStrength ?? DefaultNoiseStrength;
        CheckStrength(strength, $"categories.{category}.noise_strength");
        var type = (e.ObjectType ?? "object") switch
        {
            "object" => ObjectType.Object,
            "texture" => ObjectType.Texture,
            var other => throw new InvalidDataException($"{Source}: category '{category}': object_type must be 'object' or 'texture', found '{other}'"),
        };
        return new CategoryPrompts(category, name, coarse, fine, strength, type, isFallback, e.RotationInvariant ?? type == ObjectType.Texture);
    }

    private void CheckStrength(double value, string key)
    {
        if (!(value >= 0 && value <= 1)) throw new InvalidDataException($"{Source}: {key} = {value} is outside [0, 1]");
    }
}
