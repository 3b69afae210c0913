using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using AnomalySD.IO;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Checkpoints;

/// <summary>
/// The folder layout of a checkpoint, made so that a reader sees the old checkpoint or the new one, never a mix, while fit
/// replaces it (as TensorFlow Serving's versioned model folders, with a pointer file):
/// <code>
/// X/CURRENT                   the name of the current version (one line), replaced atomically (write a sibling, rename)
/// X/v20261203T130501123-1a2b3c4d/   one complete version, never modified once CURRENT names it: anomalysd.json,
///                             model_index.json, unet/, vae/, text_encoder/, scheduler/, prototype_banks.safetensors, ...
/// X/v…/.anomalysd.readers     the readers' lock: held shared while a process loads the version, exclusive while fit removes it
/// X/.anomalysd.lock           the writer's lock (<see cref="OutputFolder"/>): one fit at a time
/// </code>
/// A reader resolves CURRENT once, locks that version (shared), checks it is still there and loads every file from it; fit
/// writes a new version beside the old one, switches CURRENT, then removes the versions no reader holds. A fit that is
/// killed leaves X with its previous CURRENT and a partial version or staging folder, which the next fit removes (and says so).
/// A folder written by an earlier engine (the files directly in X) is still read; the next fit into it writes the versioned
/// layout and removes the old files once no reader holds them. Entries of X that are not the checkpoint's are never touched.
/// </summary>
public static partial class CheckpointStore
{
    public const string PointerFile = "CURRENT";
    public const string ManifestFile = "anomalysd.json";
    public const string ReadersLockFile = ".anomalysd.readers";

    /// <summary>The entries an earlier engine wrote directly into a checkpoint folder.</summary>
    private static readonly string[] LegacyEntries =
        [ManifestFile, "model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler", "prototype_banks.safetensors", "optimizer.pt"];

    [GeneratedRegex(@"^v\d{8}T\d{9}-[0-9a-f]{8}$")]
    private static partial Regex VersionName();

    /// <summary>Whether <paramref name="folder"/> holds a checkpoint (versioned or written by an earlier engine).</summary>
    public static bool IsCheckpoint(string folder) =>
        File.Exists(Path.Combine(folder, PointerFile)) || File.Exists(Path.Combine(folder, ManifestFile));

    /// <summary>
    /// Writes a new version of the checkpoint in <paramref name="folder"/> (which this process holds as its output) with
    /// <paramref name="write"/> (given the version's folder, which must not exist yet), makes it current in one atomic rename, and
    /// removes the versions and files no reader holds. Returns the version's name.
    /// </summary>
    public static string Publish(OutputFolder folder, Action<string> write, ILogger? log = null)
    {
        if (folder.Kind != OutputKind.Checkpoint) throw new ArgumentException($"'{folder.Path}' was opened as {OutputFolder.Describe(folder.Kind)}, not a checkpoint");
        string name = $"v{DateTime.UtcNow:yyyyMMdd'T'HHmmssfff}-{RandomNumberGenerator.GetHexString(8, lowercase: true)}";
        string version = Path.Combine(folder.Path, name);
        write(version);
        if (!File.Exists(Path.Combine(version, ManifestFile))) throw new IOException($"checkpoint version '{version}' was not written completely (no {ManifestFile})");
        File.WriteAllBytes(Path.Combine(version, ReadersLockFile), []); // readers open it, never create it
        AtomicFile.WriteText(Path.Combine(folder.Path, PointerFile), name + "\n");
        Reclaim(folder, log);
        return name;
    }

    /// <summary>
    /// Removes what an interrupted or earlier fit left in <paramref name="folder"/> (held by this process, so no other fit is
    /// writing): versions that are not current and that no reader holds, staging folders and temporary files of killed fits, the
    /// files of an earlier engine's layout once CURRENT exists, and the staging and previous folders that an earlier engine left
    /// beside it. Each removal is logged.
    /// </summary>
    public static void Reclaim(OutputFolder folder, ILogger? log)
    {
        string root = folder.Path, name = Path.GetFileName(Path.GetFullPath(root).TrimEnd(Path.DirectorySeparatorChar));
        string? current = File.Exists(Path.Combine(root, PointerFile)) ? ReadPointer(root) : null;
        foreach (string entry in Directory.EnumerateFileSystemEntries(root).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal))
        {
            string path = Path.Combine(root, entry);
            if (VersionName().IsMatch(entry) && entry != current)
            {
                if (RemoveUnlessRead(path, path)) log?.LogInformation("checkpoint '{Folder}': removed version {Version} (replaced)", root, entry);
                else log?.LogInformation("checkpoint '{Folder}': kept the replaced version {Version}: a process is loading it; the next fit removes it", root, entry);
            }
            else if (entry.StartsWith(".v", StringComparison.Ordinal) && (entry.Contains(".staging-") || entry.Contains(".previous-")) ||
                     entry.StartsWith("." + PointerFile + ".tmp-", StringComparison.Ordinal) || entry.StartsWith(".trash-", StringComparison.Ordinal))
            {
                Remove(path);
                log?.LogWarning("checkpoint '{Folder}': removed {Entry}, left by a fit that was interrupted", root, entry);
            }
        }
        if (current is not null && LegacyEntries.Any(e => Path.Exists(Path.Combine(root, e))))
        {
            if (RemoveUnlessRead(Path.Combine(root, ReadersLockFile), null, LegacyEntries.Select(e => Path.Combine(root, e)).ToArray()))
                log?.LogInformation("checkpoint '{Folder}': moved to the versioned layout (the earlier engine's files are removed)", root);
            else log?.LogInformation("checkpoint '{Folder}': the earlier engine's files are in use by a reader; the next fit removes them", root);
        }
        // An earlier engine replaced X by renaming staging and previous folders beside it; a kill left them there.
        string? parent = Path.GetDirectoryName(Path.GetFullPath(root).TrimEnd(Path.DirectorySeparatorChar));
        if (parent is null) return;
        foreach (string stale in Directory.EnumerateDirectories(parent, $".{name}.staging-*").Concat(Directory.EnumerateDirectories(parent, $".{name}.previous-*")))
        {
            if (!Regex.IsMatch(Path.GetFileName(stale), $@"^\.{Regex.Escape(name)}\.(staging|previous)-\d+$")) continue;
            Remove(stale);
            log?.LogWarning("removed '{Stale}', left beside the checkpoint by a fit of an earlier engine that was interrupted", stale);
        }
    }

    /// <summary>Removes <paramref name="paths"/> (default: the folder <paramref name="folderToRemove"/>) under the exclusive
    /// readers' lock <paramref name="lockPath"/>; false when a reader holds it.</summary>
    private static bool RemoveUnlessRead(string lockPath, string? folderToRemove, params string[] paths)
    {
        FileStream exclusive;
        try
        {
            exclusive = new FileStream(folderToRemove is null ? lockPath : Path.Combine(lockPath, ReadersLockFile),
                                       folderToRemove is null ? FileMode.OpenOrCreate : FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        }
        catch (FileNotFoundException) when (folderToRemove is not null) { exclusive = null!; } // a partial version: nobody reads it
        catch (IOException) { return false; }
        using (exclusive)
        {
            if (folderToRemove is not null)
            {
                // Renamed first, so a reader that opens the lock after this sees the version gone and reads CURRENT again.
                string trash = Path.Combine(Path.GetDirectoryName(folderToRemove)!, ".trash-" + Path.GetFileName(folderToRemove));
                Directory.Move(folderToRemove, trash);
                Remove(trash);
            }
            foreach (string p in paths) Remove(p);
        }
        return true;
    }

    private static void Remove(string path)
    {
        if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        else if (File.Exists(path)) File.Delete(path);
    }

    private static string ReadPointer(string root)
    {
        string file = Path.Combine(root, PointerFile);
        string name = File.ReadAllText(file).Trim();
        return VersionName().IsMatch(name) ? name
            : throw new InvalidDataException($"{file}: not an AnomalySD checkpoint pointer (it must name a version folder like v20261203T130501123-1a2b3c4d, got '{JsonInput.Cut(name)}')");
    }

    /// <summary>
    /// Opens the checkpoint <paramref name="path"/> for reading: the current version, locked against removal until the lease is
    /// disposed. Load every file of the checkpoint from <see cref="CheckpointLease.Folder"/> while the lease is held.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">no such folder.</exception>
    /// <exception cref="InvalidDataException">a file instead of a folder, or a folder that is not a checkpoint (the message says why).</exception>
    /// <exception cref="IOException">the checkpoint was replaced continuously for 10 s while this process tried to read it.</exception>
    public static CheckpointLease OpenForRead(string path)
    {
        if (File.Exists(path)) throw new InvalidDataException($"checkpoint '{path}' is a file; a checkpoint is the folder that fit --out writes");
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"checkpoint '{path}' does not exist");
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            var lease = TryLease(path);
            if (lease is not null) return lease;
            if (DateTime.UtcNow > deadline) throw new IOException($"checkpoint '{path}' was replaced again and again for 10 s while this process tried to read it; try again");
            Thread.Sleep(20);
        }
    }

    /// <summary>One attempt: null when a fit removed the version in the meantime (the caller tries again).</summary>
    private static CheckpointLease? TryLease(string root)
    {
        if (File.Exists(Path.Combine(root, PointerFile)))
        {
            string name = ReadPointer(root), version = Path.Combine(root, name);
            var shared = OpenShared(Path.Combine(version, ReadersLockFile), create: false);
            if (shared is null) return null;
            if (File.Exists(Path.Combine(version, ManifestFile))) return new CheckpointLease(root, version, name, shared);
            shared.Dispose();
            return null;
        }
        string manifest = Path.Combine(root, ManifestFile);
        if (Directory.Exists(manifest)) throw new InvalidDataException($"'{manifest}' is a folder; a checkpoint's {ManifestFile} is a file (the folder is not an AnomalySD checkpoint)");
        if (!File.Exists(manifest))
            throw new InvalidDataException($"'{root}' is not an AnomalySD checkpoint: it has neither {PointerFile} nor {ManifestFile} (a checkpoint is the folder that fit --out writes)");
        // An earlier engine's layout. Its readers' lock is made here if the folder is writable; read-only folders are read as they are.
        FileStream? legacy;
        try { legacy = OpenShared(Path.Combine(root, ReadersLockFile), create: true); }
        catch (UnauthorizedAccessException) { return new CheckpointLease(root, root, null, null); }
        if (legacy is null) return null;
        if (!File.Exists(Path.Combine(root, PointerFile))) return new CheckpointLease(root, root, null, legacy);
        legacy.Dispose(); // a fit made it versioned in the meantime
        return null;
    }

    /// <summary>The readers' lock, shared; null while a fit holds it exclusively or when it is gone.</summary>
    private static FileStream? OpenShared(string path, bool create)
    {
        try { return new FileStream(path, create ? FileMode.OpenOrCreate : FileMode.Open, FileAccess.Read, FileShare.ReadWrite); }
        catch (FileNotFoundException) { return null; }
        catch (DirectoryNotFoundException) { return null; }
        catch (IOException e) when (e is not PathTooLongException) { return null; }
    }

    /// <summary>
    /// A fingerprint of the checkpoint files in <paramref name="folder"/>: SHA-256 over every file's relative path, size and the
    /// SHA-256 of its first and last MiB (anomalysd's own lock files excluded). Cheap on multi-GB SD weights; any retraining,
    /// re-save or edit of the metadata changes it.
    /// </summary>
    /// <param name="folder">A version folder, or the folder of an earlier engine's layout.</param>
    /// <param name="legacy">An earlier engine's layout: only its checkpoint entries count (a fit may be adding a version beside them).</param>
    public static string Fingerprint(string folder, bool legacy = false)
    {
        using var total = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var root = Path.GetFullPath(folder);
        foreach (string file in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            string relative = Path.GetRelativePath(root, file).Replace('\\', '/');
            if (Path.GetFileName(file) is ReadersLockFile or OutputFolder.LockFileName or OutputFolder.MarkerFileName) continue;
            if (legacy && !LegacyEntries.Contains(relative.Split('/')[0])) continue;
            var info = new FileInfo(file);
            total.AppendData(Encoding.UTF8.GetBytes($"{relative}\n{info.Length}\n"));
            using var stream = File.OpenRead(file);
            var buffer = new byte[Math.Min(info.Length, 1 << 20)];
            stream.ReadExactly(buffer);
            total.AppendData(SHA256.HashData(buffer));
            if (info.Length > buffer.Length)
            {
                stream.Seek(-buffer.Length, SeekOrigin.End);
                stream.ReadExactly(buffer);
                total.AppendData(SHA256.HashData(buffer));
            }
        }
        return Convert.ToHexString(total.GetHashAndReset()).ToLowerInvariant();
    }
}

/// <summary>A checkpoint held for reading (<see cref="CheckpointStore.OpenForRead"/>): its version cannot be removed until disposed.</summary>
/// <param name="Root">The checkpoint folder the user named.</param>
/// <param name="Folder">The folder to load every file from: the current version (or <paramref name="Root"/> for an earlier engine's layout).</param>
/// <param name="Version">The version's name (null for an earlier engine's layout).</param>
public sealed class CheckpointLease(string Root, string Folder, string? Version, FileStream? readersLock) : IDisposable
{
    private string? _fingerprint;

    public string Root { get; } = Root;
    public string Folder { get; } = Folder;
    public string? Version { get; } = Version;

    /// <summary>The fingerprint of the files this lease reads (computed once, while the lease holds them unchanged).</summary>
    public string Fingerprint => _fingerprint ??= CheckpointStore.Fingerprint(Folder, legacy: Version is null);

    public void Dispose() => readersLock?.Dispose();
}
