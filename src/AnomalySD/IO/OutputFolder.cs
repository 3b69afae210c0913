using System.Text.Json;
using System.Text.Json.Nodes;
using AnomalySD.Checkpoints;

namespace AnomalySD.IO;

/// <summary>What a verb writes into its output folder. A folder that is not empty is only ever written into when it already
/// holds the same kind of output (<see cref="OutputFolder.Open"/>).</summary>
public enum OutputKind
{
    /// <summary>A checkpoint written by fit (<see cref="CheckpointStore"/>).</summary>
    Checkpoint,
    /// <summary>An evaluation report (eval, merge): results.json, report.md, figures.</summary>
    Report,
    /// <summary>The pictures of detect --out.</summary>
    Pictures,
    /// <summary>The demo's folder: data/ and report/.</summary>
    Demo,
}

/// <summary>
/// An output folder owned by this process for the length of a command:
/// <list type="bullet">
/// <item>refused before any work when it is not empty and does not already hold this kind of output (a user's notes, a
/// dataset, another verb's output are never written into or deleted), or when it is a file;</item>
/// <item>created and proved writable before any work starts;</item>
/// <item>locked (<c>.anomalysd.lock</c>, an exclusive advisory lock released when the process ends), so that a second
/// anomalysd writing to the same folder is refused instead of mixing its files in;</item>
/// <item>marked with its kind (<c>.anomalysd-output</c>, with the entries of the last complete output);</item>
/// <item>removed again when the command fails before <see cref="Complete"/> and this process created it (nothing but its own
/// hidden files in it), so a failed run leaves no empty folder behind.</item>
/// </list>
/// </summary>
public sealed class OutputFolder : IDisposable
{
    public const string LockFileName = ".anomalysd.lock";
    public const string MarkerFileName = ".anomalysd-output";
    private const string StagingPrefix = ".staging-";
    private readonly FileStream _lock;
    private readonly bool _created;
    private bool _completed;

    public string Path { get; }
    public OutputKind Kind { get; }

    private OutputFolder(string path, OutputKind kind, FileStream lockFile, bool created)
    {
        Path = path;
        Kind = kind;
        _lock = lockFile;
        _created = created;
    }

    /// <summary>Opens <paramref name="path"/> as this process's output folder of kind <paramref name="kind"/>.</summary>
    /// <exception cref="IOException">a file; a non-empty folder that holds something else (naming a few of its entries); a
    /// folder that cannot be created or written; or one in use by another anomalysd process (the message names it).</exception>
    public static OutputFolder Open(string path, OutputKind kind)
    {
        if (System.IO.File.Exists(path)) throw new IOException($"output folder '{path}' is a file; give a folder (--out)");
        bool created = !Directory.Exists(path);
        if (!created) RefuseForeign(path, kind);
        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"output folder '{path}' cannot be created: {e.Message}", e);
        }
        FileStream lockFile;
        try
        {
            lockFile = new FileStream(System.IO.Path.Combine(path, LockFileName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1,
                                      FileOptions.DeleteOnClose);
        }
        catch (UnauthorizedAccessException e)
        {
            RemoveIfCreated(path, created);
            throw new IOException($"output folder '{path}' is not writable: {e.Message}", e);
        }
        catch (IOException e)
        {
            RemoveIfCreated(path, created);
            throw new IOException($"output folder '{path}' is in use by another anomalysd process (its {LockFileName} is locked); use another --out", e);
        }
        var folder = new OutputFolder(path, kind, lockFile, created);
        try
        {
            // Proves the folder writable, and claims it for this kind (a later run recognises its own output).
            if (!System.IO.File.Exists(System.IO.Path.Combine(path, MarkerFileName))) folder.WriteMarker([]);
            folder.ReclaimStaging();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            folder.Dispose();
            throw new IOException($"output folder '{path}' is not writable: {e.Message}", e);
        }
        return folder;
    }

    /// <summary>The kind of output <paramref name="folder"/> holds, or null for anything else. Folders written before the
    /// marker existed are recognised by their files: a checkpoint by its <c>anomalysd.json</c>, a report by its
    /// <c>results.json</c> and <c>report.md</c>, detect's pictures by their <c>*_panel.png</c> names.</summary>
    public static OutputKind? KindOf(string folder)
    {
        if (CheckpointStore.IsCheckpoint(folder)) return OutputKind.Checkpoint;
        string marker = System.IO.Path.Combine(folder, MarkerFileName);
        if (System.IO.File.Exists(marker))
        {
            try
            {
                string? kind = JsonNode.Parse(System.IO.File.ReadAllText(marker))?["kind"]?.GetValue<string>();
                return Enum.TryParse(kind, ignoreCase: true, out OutputKind k) ? k : null;
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException) { return null; }
        }
        if (System.IO.File.Exists(System.IO.Path.Combine(folder, "results.json")) && System.IO.File.Exists(System.IO.Path.Combine(folder, "report.md"))) return OutputKind.Report;
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Where(f => !IsOwnEntry(System.IO.Path.GetFileName(f))).ToList();
        return files.Count > 0 && files.All(f => f.EndsWith("_panel.png", StringComparison.Ordinal)) ? OutputKind.Pictures : null;
    }

    /// <summary>Entries of <paramref name="folder"/> other than anomalysd's own hidden files (lock, marker, staging).</summary>
    public static IReadOnlyList<string> VisibleEntries(string folder) =>
        Directory.EnumerateFileSystemEntries(folder).Select(e => System.IO.Path.GetFileName(e)).Where(n => !IsOwnEntry(n)).Order(StringComparer.Ordinal).ToList();

    private static bool IsOwnEntry(string name) => name is LockFileName or MarkerFileName || name.StartsWith(StagingPrefix, StringComparison.Ordinal);

    private static void RefuseForeign(string path, OutputKind kind)
    {
        var entries = VisibleEntries(path);
        if (entries.Count == 0) return;
        var found = KindOf(path);
        if (found == kind) return;
        string holds = string.Join(", ", entries.Take(4).Select(e => Directory.Exists(System.IO.Path.Combine(path, e)) ? e + "/" : e)) +
                       (entries.Count > 4 ? $" and {entries.Count - 4} more" : "");
        string what = found is OutputKind other ? $"holds {Describe(other)}" : $"holds {holds}";
        throw new IOException($"output folder '{path}' is not empty and is not {Describe(kind)}: it {what}. Nothing was written; give a new or empty folder (--out)");
    }

    /// <summary>"a checkpoint", "an evaluation report", ...</summary>
    public static string Describe(OutputKind kind) => kind switch
    {
        OutputKind.Checkpoint => "an AnomalySD checkpoint",
        OutputKind.Report => "an AnomalySD evaluation report",
        OutputKind.Pictures => "the pictures of an earlier detect --out",
        _ => "an AnomalySD demo folder",
    };

    /// <summary>The full path of <paramref name="relative"/> inside the folder, its parent folders created.</summary>
    public string File(string relative)
    {
        string full = System.IO.Path.Combine(Path, relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        return full;
    }

    /// <summary>
    /// Replaces the folder's previous output of this kind with a complete new one: <paramref name="write"/> writes into a hidden
    /// staging folder inside it; only when it returns are its entries moved in, the entries of the previous output (as its marker
    /// lists them) that the new one lacks removed, and the marker rewritten. A failure leaves the previous output as it was.
    /// Entries that are not anomalysd's output (a user's notes) are never touched.
    /// </summary>
    public void Replace(Action<string> write)
    {
        string staging = System.IO.Path.Combine(Path, $"{StagingPrefix}{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            write(staging);
            var produced = Directory.EnumerateFileSystemEntries(staging).Select(e => System.IO.Path.GetFileName(e)).Order(StringComparer.Ordinal).ToList();
            foreach (string old in PreviousEntries().Except(produced)) Delete(System.IO.Path.Combine(Path, old));
            foreach (string name in produced)
            {
                string from = System.IO.Path.Combine(staging, name), to = System.IO.Path.Combine(Path, name);
                if (Directory.Exists(from))
                {
                    Delete(to);
                    Directory.Move(from, to);
                }
                else System.IO.File.Move(from, to, overwrite: true);
            }
            WriteMarker(produced);
        }
        finally
        {
            Delete(staging);
        }
    }

    /// <summary>Marks the command as successful: the folder stays even when it is empty.</summary>
    public void Complete() => _completed = true;

    private IEnumerable<string> PreviousEntries()
    {
        try
        {
            var files = JsonNode.Parse(System.IO.File.ReadAllText(System.IO.Path.Combine(Path, MarkerFileName)))?["entries"] as JsonArray;
            return files?.Select(f => f?.GetValue<string>()).OfType<string>()
                        .Where(n => n.Length > 0 && n == System.IO.Path.GetFileName(n) && n is not "." and not ".." && !IsOwnEntry(n)).ToList() ?? [];
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or InvalidOperationException) { return []; }
    }

    private void WriteMarker(IReadOnlyList<string> entries) => AtomicFile.WriteText(System.IO.Path.Combine(Path, MarkerFileName), new JsonObject
    {
        ["kind"] = Kind.ToString().ToLowerInvariant(),
        ["entries"] = new JsonArray(entries.Select(e => (JsonNode)JsonValue.Create(e)!).ToArray()),
    }.ToJsonString());

    /// <summary>Staging folders of an earlier run of this kind that was killed (this process holds the lock, so none is live).</summary>
    private void ReclaimStaging()
    {
        foreach (string dir in Directory.EnumerateDirectories(Path, StagingPrefix + "*")) Delete(dir);
    }

    private static void Delete(string path)
    {
        if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        else if (System.IO.File.Exists(path)) System.IO.File.Delete(path);
    }

    private static void RemoveIfCreated(string path, bool created)
    {
        if (!created) return;
        try
        {
            if (!Directory.EnumerateFileSystemEntries(path).Any(e => !IsOwnEntry(System.IO.Path.GetFileName(e)))) Directory.Delete(path, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    public void Dispose()
    {
        _lock.Dispose();
        if (!_completed) RemoveIfCreated(Path, _created);
    }
}

/// <summary>Where output folders may not go: inside an input, or around one (a dataset, detect's inputs, merge's shards).</summary>
public static class PathGuard
{
    /// <summary>The full path of <paramref name="path"/> with the symbolic links of its existing part resolved.</summary>
    public static string Canonical(string path)
    {
        string full = Path.GetFullPath(path);
        string root = Path.GetPathRoot(full) ?? "";
        string current = root;
        foreach (string part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            current = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            if (info.Exists && info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is { } target)
                current = Path.GetFullPath(target.FullName);
        }
        return current.TrimEnd(Path.DirectorySeparatorChar) is { Length: > 0 } t ? t : current;
    }

    /// <summary>Whether <paramref name="inner"/> is <paramref name="outer"/> or inside it (both canonical).</summary>
    public static bool IsWithin(string inner, string outer)
    {
        var cmp = OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        return inner.Equals(outer, cmp) || inner.StartsWith(outer.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, cmp);
    }

    /// <summary>Refuses an output <paramref name="output"/> (named by <paramref name="outFlag"/>) that is <paramref name="input"/>, is
    /// inside it or contains it.</summary>
    /// <exception cref="ArgumentException">naming both.</exception>
    public static void Separate(string output, string outFlag, string input, string inputName)
    {
        string o = Canonical(output), i = Canonical(input);
        if (IsWithin(o, i))
            throw new ArgumentException($"{outFlag} '{output}' is {(o == i ? "" : "inside ")}{inputName} '{input}': writing there would change the input; give a folder outside it");
        if (IsWithin(i, o))
            throw new ArgumentException($"{outFlag} '{output}' contains {inputName} '{input}': writing there could replace the input; give a folder outside it");
    }
}
