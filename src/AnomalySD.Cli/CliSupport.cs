using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using AnomalySD.IO;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

/// <summary>Logging, progress and the options file.</summary>
public static class CliSupport
{
    /// <summary>Log lines on stderr (stdout carries results: detect's score table, eval's metrics table).</summary>
    public static ILoggerFactory Logging(bool verbose) => LoggerFactory.Create(b =>
        b.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; })
         .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)
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

    /// <summary>Flags whose value is a comma-separated list: an options file may give them as a JSON array.</summary>
    private static readonly HashSet<string> ListFlags = ["categories", "scales", "calibration-size", "calibration-lambdas", "device"];

    /// <summary>Longest array an options file may give a list flag.</summary>
    private const int MaxListItems = 10_000;

    /// <summary>
    /// Expands <c>--config FILE</c> (or <c>--config=FILE</c>): each key of the JSON object becomes <c>--key value</c> unless the
    /// flag is already on the command line (as <c>--key value</c> or <c>--key=value</c>), inserted before a <c>--</c>. Every value
    /// is checked against its flag's type first, so a value never turns into another argument: a boolean flag takes true or
    /// false (true: <c>--key</c>; false or null: absent), a number flag a JSON number, a text flag a string or a number, a list
    /// flag (<c>categories</c>, <c>scales</c>, ...) also an array of strings and numbers (comma-joined).
    /// </summary>
    /// <exception cref="UsageException">--config without a file or given twice; a missing, unreadable or non-object file; an
    /// unknown key; a value of the wrong type (naming the file and the key).</exception>
    public static string[] ExpandConfig(string[] args)
    {
        ConfigFlags = null;
        int end = Array.IndexOf(args, "--");
        if (end < 0) end = args.Length;
        var at = Enumerable.Range(0, end).Where(k => args[k] == "--config" || args[k].StartsWith("--config=", StringComparison.Ordinal)).ToList();
        if (at.Count == 0) return args;
        if (at.Count > 1) throw new UsageException("--config is given more than once; give one options file");
        int i = at[0];
        bool inline = args[i].StartsWith("--config=", StringComparison.Ordinal);
        string? path = inline ? args[i]["--config=".Length..] : i + 1 < end && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[i + 1] : null;
        if (string.IsNullOrEmpty(path)) throw new UsageException("--config needs a file: --config options.json");
        var result = args.Where((_, k) => k != i && (inline || k != i + 1)).ToList();
        int insertAt = result.IndexOf("--") is int dd and >= 0 ? dd : result.Count;
        JsonInput file;
        try { file = JsonInput.Load(path); }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException) { throw new UsageException($"options file: {e.Message}"); }
        if (file.Node is not JsonObject) throw new UsageException($"{path}: an options file must be a JSON object, got {file.Describe()}");
        var options = OptionsOf(args.Length > 0 ? args[0] : "");
        var fromFile = new Dictionary<string, string>(); // flag -> the key as written in the file
        var added = new List<string>();
        foreach (var (key, value) in file.Members())
        {
            string name = key.Replace('_', '-'), flag = "--" + name;
            if (name == "config") throw new UsageException($"{path}: an options file cannot name another options file (\"{key}\")");
            if (!options.TryGetValue(name, out Type? type))
                throw new UsageException($"{path}: unknown key \"{JsonInput.Cut(key)}\" (keys are the long flag names of this command, e.g. \"unet-steps\" or \"unet_steps\")");
            if (result.Take(insertAt).Any(a => a == flag || a.StartsWith(flag + "=", StringComparison.Ordinal))) continue;
            if (fromFile.ContainsKey(flag)) throw new UsageException($"{path}: \"{key}\" and \"{fromFile[flag]}\" set the same flag {flag}");
            fromFile[flag] = key;
            string? text = ValueOf(value, Nullable.GetUnderlyingType(type) ?? type, ListFlags.Contains(name));
            if (text is null) continue; // false or null: the flag is absent
            added.Add(flag);
            if (text.Length > 0) added.Add(text);
        }
        result.InsertRange(insertAt, added);
        ConfigFlags = (path, fromFile);
        return result.ToArray();
    }

    /// <summary>The command-line text of an options-file value for a flag of <paramref name="type"/>: "" for a boolean flag that is
    /// set, null for one that is not.</summary>
    private static string? ValueOf(JsonInput value, Type type, bool list)
    {
        string Bad(string expected) => throw new UsageException($"{value.File}: the value of \"{value.Path}\" must be {expected}, got {value.Describe()}");
        var kind = value.Node?.GetValueKind();
        if (type == typeof(bool))
            return kind switch { JsonValueKind.True => "", JsonValueKind.False or null => null, _ => Bad("true or false") };
        if (kind is null) return null;
        bool number = type == typeof(int) || type == typeof(long) || type == typeof(ulong) || type == typeof(double);
        if (number) return kind == JsonValueKind.Number ? value.Node!.ToJsonString() : Bad("a number");
        if (kind == JsonValueKind.String) return value.String();
        if (kind == JsonValueKind.Number && !type.IsEnum) return value.Node!.ToJsonString();
        if (kind == JsonValueKind.Array && list)
        {
            var items = value.Items();
            if (items.Count > MaxListItems) Bad($"an array of at most {MaxListItems} items");
            return string.Join(",", items.Select(item => item.Node?.GetValueKind() switch
            {
                JsonValueKind.String when !item.String().Contains(',') => item.String(),
                JsonValueKind.Number => item.Node!.ToJsonString(),
                _ => throw new UsageException($"{value.File}: the items of \"{value.Path}\" must be strings without commas or numbers, got {item.Describe()}"),
            }));
        }
        return Bad(type.IsEnum ? $"one of {string.Join(", ", Enum.GetNames(type))}" : list ? "a string, a number or an array of them" : "a string");
    }

    /// <summary>The long flag names of <paramref name="verb"/>'s options with their property types (empty for an unknown verb).</summary>
    private static Dictionary<string, Type> OptionsOf(string verb)
    {
        var type = typeof(CliSupport).Assembly.GetTypes().FirstOrDefault(t => t.GetCustomAttribute<VerbAttribute>()?.Name == verb);
        return type?.GetProperties().Select(p => (p, o: p.GetCustomAttribute<OptionAttribute>())).Where(x => x.o?.LongName is { Length: > 0 })
                   .ToDictionary(x => x.o!.LongName, x => x.p.PropertyType) ?? [];
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

/// <summary>The command line or its options file is wrong (exit 1): the message says what to change; nothing was run.</summary>
public sealed class UsageException(string message, Exception? inner = null) : Exception(message, inner);
