namespace AnomalySD.Data;

/// <summary>One image of a dataset split.</summary>
/// <param name="Category">Product category (e.g. "bottle").</param>
/// <param name="ImagePath">Absolute path of the image.</param>
/// <param name="IsAnomalous">Ground-truth image label.</param>
/// <param name="DefectType">"good" for normal images, else the defect folder / label.</param>
/// <param name="MaskPath">Ground-truth mask, paired by file stem; null for normal images (all-zero mask) or when absent.</param>
public sealed record Sample(string Category, string ImagePath, bool IsAnomalous, string DefectType, string? MaskPath)
{
    public string Stem => Path.GetFileNameWithoutExtension(ImagePath);
}

/// <summary>A dataset: categories with train (normal) and test samples.</summary>
public interface IDataset
{
    /// <summary>Root folder.</summary>
    string Root { get; }

    /// <summary>Categories present, sorted ordinally.</summary>
    IReadOnlyList<string> Categories { get; }

    /// <summary>Normal training images of <paramref name="category"/>, sorted by path.</summary>
    /// <exception cref="KeyNotFoundException">unknown category (the message lists the known ones).</exception>
    IReadOnlyList<Sample> Train(string category);

    /// <summary>Test images (normal and anomalous), sorted by defect type then path.</summary>
    IReadOnlyList<Sample> Test(string category);

    /// <summary>Whether <paramref name="category"/> has a training split to take shots from.</summary>
    bool HasTrainSplit(string category) => true;

    /// <summary>Sub-folders of the root that the layout does not read (neither a category nor its metadata), to be named in the log.</summary>
    IReadOnlyList<string> IgnoredFolders => [];
}

/// <summary>Choice of the K normal shots per category.</summary>
public static class ShotSelection
{
    /// <summary>The first <paramref name="shots"/> samples in sorted path order, or, with a <paramref name="seed"/>, a
    /// seeded random choice (returned in sorted order). 0 &lt;= shots; fewer available samples is an error.</summary>
    public static IReadOnlyList<Sample> Select(IReadOnlyList<Sample> train, int shots, int? seed = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(shots);
        if (shots > train.Count)
            throw new InvalidDataException($"{shots} shots requested but only {train.Count} normal training images exist" +
                                           (train.Count > 0 ? $" for '{train[0].Category}'" : ""));
        var sorted = train.OrderBy(s => s.ImagePath, StringComparer.Ordinal).ToList();
        if (seed is null) return sorted.Take(shots).ToList();
        var rng = new Random(seed.Value);
        return sorted.OrderBy(_ => rng.Next()).Take(shots).OrderBy(s => s.ImagePath, StringComparer.Ordinal).ToList();
    }
}

/// <summary>Helpers shared by the layouts.</summary>
public static class DatasetFiles
{
    public static readonly string[] ImageExtensions = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"];

    public static IEnumerable<string> ImagesIn(string dir) =>
        Directory.Exists(dir)
            ? Directory.EnumerateFiles(dir).Where(f => ImageExtensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => f, StringComparer.Ordinal)
            : [];

    /// <summary>Stem -> path of the masks in <paramref name="dir"/>; "000_mask.png" and "000.png" both pair with stem "000".</summary>
    public static Dictionary<string, string> MasksByStem(string dir, string suffix = "_mask")
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string f in ImagesIn(dir))
        {
            string stem = Path.GetFileNameWithoutExtension(f);
            if (stem.EndsWith(suffix, StringComparison.Ordinal)) stem = stem[..^suffix.Length];
            map[stem] = f;
        }
        return map;
    }

    public static KeyNotFoundException UnknownCategory(string category, IEnumerable<string> known, string root) =>
        new($"unknown category '{category}' in '{root}' (known: {string.Join(", ", known)})");
}
