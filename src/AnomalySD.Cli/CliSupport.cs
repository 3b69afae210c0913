using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

/// <summary>Logging, progress and the options file.</summary>
public static class CliSupport
{
    public static ILoggerFactory Logging(bool verbose) => LoggerFactory.Create(b =>
        b.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; })
         .SetMinimumLevel(verbose ? LogLevel.Debug : LogLevel.Information));

    /// <summary>A progress reporter on stderr: a redrawn bar on a terminal, a line per 10 % otherwise.</summary>
    public static Action<string, int, int> Progress()
    {
        bool tty = !Console.IsErrorRedirected;
        int lastDecile = -1;
        string lastLabel = "";
        return (label, done, total) =>
        {
            if (label != lastLabel) { lastDecile = -1; lastLabel = label; }
            int width = 30, filled = total == 0 ? width : done * width / total;
            if (tty)
            {
                Console.Error.Write($"\r{label,-22} [{new string('#', filled)}{new string('.', width - filled)}] {done}/{total}");
                if (done == total) Console.Error.WriteLine();
            }
            else
            {
                int decile = total == 0 ? 10 : done * 10 / total;
                if (decile != lastDecile) { Console.Error.WriteLine($"{label}: {done}/{total}"); lastDecile = decile; }
            }
        };
    }

    /// <summary>
    /// Expands <c>--config FILE</c>: each key of the JSON object becomes <c>--key value</c> unless the flag is already on the
    /// command line (booleans: <c>--key</c> when true; arrays: comma-joined).
    /// </summary>
    /// <exception cref="InvalidDataException">the file is not a JSON object.</exception>
    public static string[] ExpandConfig(string[] args)
    {
        ConfigFlags = null;
        int i = Array.IndexOf(args, "--config");
        if (i < 0 || i + 1 >= args.Length) return args;
        string path = args[i + 1];
        if (Directory.Exists(path)) throw new FileNotFoundException($"options file '{path}' is a directory, not a JSON file", path);
        if (!File.Exists(path)) throw new FileNotFoundException($"options file '{path}' does not exist", path);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e); }
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: options file must be a JSON object");
        var result = args.Where((_, k) => k != i && k != i + 1).ToList();
        var fromFile = new Dictionary<string, string>(); // flag -> the key as written in the file
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            string flag = "--" + p.Name.Replace('_', '-');
            if (result.Contains(flag)) continue;
            fromFile[flag] = p.Name;
            switch (p.Value.ValueKind)
            {
                case JsonValueKind.True: result.Add(flag); break;
                case JsonValueKind.False: case JsonValueKind.Null: break;
                case JsonValueKind.Array: result.Add(flag); result.Add(string.Join(",", p.Value.EnumerateArray().Select(v => v.ToString()))); break;
                default: result.Add(flag); result.Add(p.Value.ToString()); break;
            }
        }
        ConfigFlags = (path, fromFile);
        return result.ToArray();
    }

    /// <summary>The options file of the last <see cref="ExpandConfig"/> and the flags it supplied (null: none).</summary>
    public static (string Path, Dictionary<string, string> Flags)? ConfigFlags { get; private set; }

    /// <summary>
    /// The options file that supplied <paramref name="flag"/> (with or without the leading dashes), if any: errors
    /// about a value set in the file name the file, not just the flag.
    /// </summary>
    public static string? ConfigFileFor(string flag) => ConfigFlags is { } c && c.Flags.ContainsKey(AsFlag(flag)) ? c.Path : null;

    /// <summary>The key as written in the options file for <paramref name="flag"/> (e.g. "unet_steps"), or the flag's name.</summary>
    public static string ConfigKeyFor(string flag) =>
        ConfigFlags is { } c && c.Flags.TryGetValue(AsFlag(flag), out string? key) ? key : flag.TrimStart('-');

    private static string AsFlag(string name) => name.StartsWith("--", StringComparison.Ordinal) ? name : "--" + name;

    /// <summary>Appends "(set in options file F)" to a validation message whose flag came from the options file.</summary>
    public static string WithConfigSource(string message)
    {
        if (ConfigFlags is not { } c) return message;
        var flag = c.Flags.Keys.FirstOrDefault(f => Regex.IsMatch(message, Regex.Escape(f) + @"(?![\w-])"));
        return flag is null ? message : $"{message} (set in options file {c.Path})";
    }

    public static IReadOnlyList<string> SplitList(string? list) =>
        string.IsNullOrWhiteSpace(list) ? [] : list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
