namespace AnomalySD.Data;

/// <summary>Image inputs of <c>detect</c>: files and folders expanded to image files, each with a unique output name.</summary>
public static class InputFiles
{
    /// <summary>
    /// Expands <paramref name="inputs"/> (files, or folders: the images directly inside them, in sorted order) and gives each
    /// file a relative output name that keeps its path: a folder's files are named <c>folder/relative/path</c>, a file given
    /// directly by its file name. A name that would repeat (two folders both called <c>a</c>, the same file twice) gets a
    /// numeric suffix, so no output overwrites another.
    /// </summary>
    public static IReadOnlyList<(string File, string Name)> Expand(IEnumerable<string> inputs)
    {
        var result = new List<(string, string)>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (string input in inputs)
        {
            if (Directory.Exists(input))
            {
                string root = Path.GetFullPath(input).TrimEnd(Path.DirectorySeparatorChar);
                string folder = Path.GetFileName(root);
                foreach (string file in DatasetFiles.ImagesIn(input))
                    result.Add((file, Unique(Path.Combine(folder, Path.GetRelativePath(root, Path.GetFullPath(file))), used)));
            }
            else
            {
                result.Add((input, Unique(Path.GetFileName(input), used)));
            }
        }
        return result;
    }

    private static string Unique(string name, HashSet<string> used)
    {
        string stem = Path.Combine(Path.GetDirectoryName(name) ?? "", Path.GetFileNameWithoutExtension(name));
        string candidate = stem;
        for (int n = 2; !used.Add(candidate); n++) candidate = $"{stem}_{n}";
        return candidate;
    }
}
