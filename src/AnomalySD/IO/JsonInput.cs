using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace AnomalySD.IO;

/// <summary>
/// A value of a JSON file that is read as input (a checkpoint's <c>anomalysd.json</c>, a shard's manifest, a line of
/// <c>scores.jsonl</c>), with its location, so that every wrong type, missing key or value out of range is an
/// <see cref="InvalidDataException"/> naming the file and the key: <c>ckpt/anomalysd.json: "metadata.analysis_size" must be
/// an integer, got the string "64"</c>. Values echoed in messages are cut to <see cref="EchoLimit"/> characters.
/// </summary>
public readonly struct JsonInput
{
    /// <summary>Longest value echoed in an error message.</summary>
    public const int EchoLimit = 80;

    /// <param name="file">The file the value was read from (named in every error).</param>
    /// <param name="path">The key path of the value inside the file ("" for the root), e.g. "metadata.categories[1].name".</param>
    /// <param name="node">The value (null: missing or JSON null).</param>
    public JsonInput(string file, string path, JsonNode? node)
    {
        File = file;
        Path = path;
        Node = node;
    }

    public string File { get; }
    public string Path { get; }
    public JsonNode? Node { get; }

    /// <summary>Parses <paramref name="text"/> (the content of <paramref name="file"/>; <paramref name="path"/> names the part, e.g. "line 3").</summary>
    /// <exception cref="InvalidDataException">not valid JSON.</exception>
    public static JsonInput Parse(string file, string text, string path = "")
    {
        try { return new JsonInput(file, path, JsonNode.Parse(text)); }
        catch (JsonException e)
        {
            string where = path.Length > 0 ? $"{path}: " : "";
            throw new InvalidDataException($"{file}: {where}not valid JSON ({e.Message.Split('\n')[0]})", e);
        }
    }

    /// <summary>Reads and parses a JSON file.</summary>
    /// <exception cref="InvalidDataException">not valid JSON.</exception>
    /// <exception cref="IOException">the file is missing, a folder or unreadable (the message names it).</exception>
    public static JsonInput Load(string file)
    {
        if (Directory.Exists(file)) throw new IOException($"'{file}' is a folder, not a JSON file");
        if (!System.IO.File.Exists(file)) throw new FileNotFoundException($"'{file}' does not exist", file);
        return Parse(file, System.IO.File.ReadAllText(file));
    }

    public bool Exists => Node is not null;

    /// <summary>The member <paramref name="key"/> of this object (missing when this is not an object or has no such key).</summary>
    public JsonInput this[string key] => new(File, Path.Length == 0 ? key : $"{Path}.{key}", Node is JsonObject o ? o[key] : null);

    /// <summary>An error about this value: "<c>file: "path" problem</c>".</summary>
    public InvalidDataException Error(string problem) => new(Path.Length == 0 ? $"{File}: {problem}" : $"{File}: \"{Path}\" {problem}");

    /// <summary>Throws <see cref="Error"/> when <paramref name="problem"/> (a rule's verdict, e.g. <see cref="OptionRules"/>) is not null.</summary>
    public T Checked<T>(T value, string? problem) => problem is null ? value : throw Error(problem);

    public JsonObject Object()
    {
        Require();
        return Node as JsonObject ?? throw Error($"must be a JSON object, got {Describe()}");
    }

    /// <summary>The members of this object, each with its location.</summary>
    public IEnumerable<(string Key, JsonInput Value)> Members()
    {
        string file = File, path = Path;
        return Object().Select(kv => (kv.Key, new JsonInput(file, path.Length == 0 ? kv.Key : $"{path}.{kv.Key}", kv.Value)));
    }

    /// <summary>The items of this array, each with its location.</summary>
    public IReadOnlyList<JsonInput> Items()
    {
        Require();
        if (Node is not JsonArray a) throw Error($"must be a JSON array, got {Describe()}");
        string file = File, path = Path;
        return a.Select((v, i) => new JsonInput(file, $"{path}[{i}]", v)).ToList();
    }

    public string String()
    {
        Require();
        return Node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : throw Error($"must be a string, got {Describe()}");
    }

    /// <summary>A whole number in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public int Int(int min = int.MinValue, int max = int.MaxValue)
    {
        Require();
        if (Node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
        {
            // Parsed from the JSON text: values built in memory (JsonValue<int>, <double>) and parsed ones read alike.
            if (long.TryParse(v.ToJsonString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) && l >= min && l <= max) return (int)l;
            throw Error($"must be a whole number from {min} to {max}, got {Describe()}");
        }
        throw Error($"must be a whole number, got {Describe()}");
    }

    /// <summary>A finite number in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public double Double(double min = double.MinValue, double max = double.MaxValue)
    {
        Require();
        if (Node is JsonValue v && v.GetValueKind() == JsonValueKind.Number &&
            double.TryParse(v.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
            return double.IsFinite(d) && d >= min && d <= max ? d : throw Error($"must be a number from {Num(min)} to {Num(max)}, got {Describe()}");
        throw Error($"must be a number, got {Describe()}");
    }

    public bool Bool()
    {
        Require();
        return Node?.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error($"must be true or false, got {Describe()}"),
        };
    }

    public string? OptionalString() => Exists ? String() : null;
    public int? OptionalInt(int min = int.MinValue, int max = int.MaxValue) => Exists ? Int(min, max) : null;
    public double? OptionalDouble(double min = double.MinValue, double max = double.MaxValue) => Exists ? Double(min, max) : null;

    private void Require()
    {
        if (Node is null) throw Error("is missing");
    }

    /// <summary>The value as an error message shows it: its kind and its text, cut to <see cref="EchoLimit"/> characters.</summary>
    public string Describe() => Node switch
    {
        null => "nothing",
        JsonObject => "an object",
        JsonArray a => $"an array of {a.Count} items",
        JsonValue v when v.GetValueKind() == JsonValueKind.String => $"the string \"{Cut(v.GetValue<string>())}\"",
        _ => Cut(Node.ToJsonString()),
    };

    /// <summary><paramref name="text"/> cut to <see cref="EchoLimit"/> characters ("…" and the full length when longer).</summary>
    public static string Cut(string text) => text.Length <= EchoLimit ? text : $"{text[..(EchoLimit - 1)]}… ({text.Length} characters)";

    private static string Num(double v) => v switch
    {
        double.MinValue => "-inf",
        double.MaxValue => "+inf",
        _ => v.ToString("G", CultureInfo.InvariantCulture),
    };
}
