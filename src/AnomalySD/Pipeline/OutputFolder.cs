namespace AnomalySD.Pipeline;

/// <summary>Writes files so that a failure (a full disk, a crash) never leaves a half-written one: the content goes to a
/// temporary sibling, which is renamed over the target only once complete; on failure the temporary file is removed and
/// the target keeps its previous content (or stays absent).</summary>
public static class AtomicFile
{
    /// <exception cref="IOException">the file cannot be written (the message names it).</exception>
    public static void Write(string path, Action<Stream> write)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (var stream = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(tmp);
            throw new IOException($"cannot write '{path}': {e.Message}", e);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    public static void WriteText(string path, string text) => Write(path, s =>
    {
        using var w = new StreamWriter(s, new System.Text.UTF8Encoding(false), leaveOpen: true);
        w.Write(text);
    });

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// An output folder owned by this process for the length of a command: created and proved writable before any work starts,
/// and locked (<c>.anomalysd.lock</c>, an exclusive advisory lock released when the process ends) so that a second anomalysd
/// writing to the same folder is refused instead of mixing its files in.
/// </summary>
public sealed class OutputFolder : IDisposable
{
    public const string LockFileName = ".anomalysd.lock";
    private readonly FileStream _lock;

    public string Path { get; }

    private OutputFolder(string path, FileStream lockFile)
    {
        Path = path;
        _lock = lockFile;
    }

    /// <exception cref="IOException">the folder cannot be created or written, or another process holds it (the message names it).</exception>
    public static OutputFolder Open(string path)
    {
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
            throw new IOException($"output folder '{path}' is not writable: {e.Message}", e);
        }
        catch (IOException e)
        {
            throw new IOException($"output folder '{path}' is in use by another anomalysd process (its {LockFileName} is locked); use another --out", e);
        }
        try
        {
            AtomicFile.WriteText(System.IO.Path.Combine(path, ".anomalysd.write-test"), "ok");
            System.IO.File.Delete(System.IO.Path.Combine(path, ".anomalysd.write-test"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            lockFile.Dispose();
            throw new IOException($"output folder '{path}' is not writable: {e.Message}", e);
        }
        return new OutputFolder(path, lockFile);
    }

    /// <summary>The full path of <paramref name="relative"/> inside the folder, its parent folders created.</summary>
    public string File(string relative)
    {
        string full = System.IO.Path.Combine(Path, relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        return full;
    }

    public void Dispose() => _lock.Dispose();
}
