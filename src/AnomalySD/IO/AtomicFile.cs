
namespace AnomalySD.IO;

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
