namespace AnomalySD.Data;

/// <summary>
/// MVTec AD layout: <c>category/train/good</c>, <c>category/test/{good,&lt;defect&gt;}</c>,
/// <c>category/ground_truth/&lt;defect&gt;/&lt;stem&gt;_mask.png</c>. Masks pair with images by stem, never by position.
/// A category is any sub-folder holding <c>train/good</c> or <c>test/</c> (a category with a test split only can be evaluated
/// with a checkpoint, not fitted); other sub-folders are listed in <see cref="IgnoredFolders"/>.
/// </summary>
public sealed class MVTecDataset : IDataset
{
    public string Root { get; }
    public IReadOnlyList<string> Categories { get; }
    public IReadOnlyList<string> IgnoredFolders { get; }

    public MVTecDataset(string root)
    {
        Root = Path.GetFullPath(root);
        if (!Directory.Exists(Root)) throw new DirectoryNotFoundException($"dataset folder '{Root}' does not exist");
        var folders = Directory.EnumerateDirectories(Root).Where(d => !Path.GetFileName(d).StartsWith('.')).OrderBy(d => d, StringComparer.Ordinal).ToList();
        Categories = folders.Where(IsCategory).Select(Path.GetFileName).OfType<string>().ToList();
        IgnoredFolders = folders.Where(d => !IsCategory(d)).Select(Path.GetFileName).OfType<string>().ToList();
    }

    private static bool IsCategory(string dir) => Directory.Exists(Path.Combine(dir, "train", "good")) || Directory.Exists(Path.Combine(dir, "test"));

    public static bool Matches(string root) =>
        Directory.Exists(root) && Directory.EnumerateDirectories(root).Any(d => Directory.Exists(Path.Combine(d, "train", "good")));

    private string CategoryDir(string category) =>
        Categories.Contains(category) ? Path.Combine(Root, category) : throw DatasetFiles.UnknownCategory(category, Categories, Root);

    public bool HasTrainSplit(string category) => Directory.Exists(Path.Combine(CategoryDir(category), "train", "good"));

    /// <exception cref="InvalidDataException">the category has no train/good folder.</exception>
    public IReadOnlyList<Sample> Train(string category)
    {
        string dir = Path.Combine(CategoryDir(category), "train", "good");
        if (!Directory.Exists(dir)) throw new InvalidDataException($"category '{category}' has no train/good folder ('{dir}'): it can be evaluated with a checkpoint but not fitted");
        return DatasetFiles.ImagesIn(dir).Select(p => new Sample(category, p, false, "good", null)).ToList();
    }

    public IReadOnlyList<Sample> Test(string category)
    {
        string dir = CategoryDir(category);
        var samples = new List<Sample>();
        string testDir = Path.Combine(dir, "test");
        if (!Directory.Exists(testDir)) return samples;
        foreach (string defectDir in Directory.EnumerateDirectories(testDir).OrderBy(d => d, StringComparer.Ordinal))
        {
            string defect = Path.GetFileName(defectDir);
            bool anomalous = defect != "good";
            var masks = anomalous ? DatasetFiles.MasksByStem(Path.Combine(dir, "ground_truth", defect)) : [];
            foreach (string image in DatasetFiles.ImagesIn(defectDir))
            {
                string stem = Path.GetFileNameWithoutExtension(image);
                samples.Add(new Sample(category, image, anomalous, defect, masks.GetValueOrDefault(stem)));
            }
        }
        return samples;
    }
}

/// <summary>
/// VisA layout: <c>split_csv/1cls.csv</c> with the header <c>object,split,label,image,mask</c>; <c>label</c> is
/// "normal" or "anomaly", <c>split</c> "train" or "test", paths relative to the root.
/// </summary>
public sealed class VisaDataset : IDataset
{
    private readonly Dictionary<string, List<Sample>> _train = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<Sample>> _test = new(StringComparer.Ordinal);

    public string Root { get; }
    public IReadOnlyList<string> Categories { get; }
    public static string CsvPath(string root) => Path.Combine(root, "split_csv", "1cls.csv");
    public static bool Matches(string root) => File.Exists(CsvPath(root));

    /// <exception cref="InvalidDataException">a malformed CSV (the message names the file and the line).</exception>
    public VisaDataset(string root)
    {
        Root = Path.GetFullPath(root);
        string csv = CsvPath(Root);
        if (!File.Exists(csv)) throw new FileNotFoundException($"VisA split file '{csv}' does not exist", csv);
        string[] lines = File.ReadAllLines(csv);
        if (lines.Length == 0) throw new InvalidDataException($"{csv}: empty file");
        string[] header = lines[0].Trim().Split(',');
        int Col(string name) => Array.IndexOf(header, name) is var i and >= 0 ? i
            : throw new InvalidDataException($"{csv}: header lacks column '{name}' (found: {lines[0].Trim()})");
        int cObj = Col("object"), cSplit = Col("split"), cLabel = Col("label"), cImage = Col("image"), cMask = Col("mask");
        for (int n = 1; n < lines.Length; n++)
        {
            if (string.IsNullOrWhiteSpace(lines[n])) continue;
            string[] f = lines[n].Trim().Split(',');
            if (f.Length < header.Length) throw new InvalidDataException($"{csv}:{n + 1}: expected {header.Length} fields, found {f.Length}");
            bool anomalous = f[cLabel] switch
            {
                "normal" => false,
                "anomaly" => true,
                _ => throw new InvalidDataException($"{csv}:{n + 1}: label must be 'normal' or 'anomaly', found '{f[cLabel]}'"),
            };
            string? mask = string.IsNullOrWhiteSpace(f[cMask]) ? null : Path.Combine(Root, f[cMask]);
            var sample = new Sample(f[cObj], Path.Combine(Root, f[cImage]), anomalous, anomalous ? "anomaly" : "good", mask);
            var target = f[cSplit] switch
            {
                "train" => _train,
                "test" => _test,
                _ => throw new InvalidDataException($"{csv}:{n + 1}: split must be 'train' or 'test', found '{f[cSplit]}'"),
            };
            if (!target.TryGetValue(sample.Category, out var list)) target[sample.Category] = list = [];
            list.Add(sample);
        }
        Categories = _train.Keys.Union(_test.Keys).OrderBy(c => c, StringComparer.Ordinal).ToList();
    }

    public IReadOnlyList<Sample> Train(string category) => Get(_train, category).Where(s => !s.IsAnomalous).OrderBy(s => s.ImagePath, StringComparer.Ordinal).ToList();
    public IReadOnlyList<Sample> Test(string category) => Get(_test, category).OrderBy(s => s.DefectType, StringComparer.Ordinal).ThenBy(s => s.ImagePath, StringComparer.Ordinal).ToList();

    private List<Sample> Get(Dictionary<string, List<Sample>> split, string category) =>
        Categories.Contains(category) ? split.GetValueOrDefault(category) ?? [] : throw DatasetFiles.UnknownCategory(category, Categories, Root);
}

/// <summary>
/// Plain folder layout: <c>normal/</c>, <c>abnormal/</c>, optional <c>masks/</c> (paired by stem, "&lt;stem&gt;.png" or
/// "&lt;stem&gt;_mask.png"). Either the root itself holds them (one category named after the root folder) or each
/// sub-folder does (one category each). Training shots come from <c>normal/</c>; the test split is every image
/// (shots are excluded from evaluation by the evaluator).
/// </summary>
public sealed class FolderDataset : IDataset
{
    private readonly Dictionary<string, string> _dirs = new(StringComparer.Ordinal);

    public string Root { get; }
    public IReadOnlyList<string> Categories { get; }

    public static bool Matches(string root) =>
        Directory.Exists(Path.Combine(root, "normal")) ||
        (Directory.Exists(root) && Directory.EnumerateDirectories(root).Any(d => Directory.Exists(Path.Combine(d, "normal"))));

    public FolderDataset(string root)
    {
        Root = Path.GetFullPath(root);
        if (Directory.Exists(Path.Combine(Root, "normal")))
            _dirs[Path.GetFileName(Root.TrimEnd(Path.DirectorySeparatorChar))] = Root;
        else if (Directory.Exists(Root))
            foreach (string d in Directory.EnumerateDirectories(Root).Where(d => Directory.Exists(Path.Combine(d, "normal"))))
                _dirs[Path.GetFileName(d)] = d;
        if (_dirs.Count == 0) throw new DirectoryNotFoundException($"'{Root}' has no normal/ folder (plain folder layout)");
        Categories = _dirs.Keys.OrderBy(c => c, StringComparer.Ordinal).ToList();
    }

    private string Dir(string category) => _dirs.TryGetValue(category, out var d) ? d : throw DatasetFiles.UnknownCategory(category, Categories, Root);

    public IReadOnlyList<Sample> Train(string category) =>
        DatasetFiles.ImagesIn(Path.Combine(Dir(category), "normal")).Select(p => new Sample(category, p, false, "good", null)).ToList();

    public IReadOnlyList<Sample> Test(string category)
    {
        string dir = Dir(category);
        var masks = DatasetFiles.MasksByStem(Path.Combine(dir, "masks"));
        return Train(category)
            .Concat(DatasetFiles.ImagesIn(Path.Combine(dir, "abnormal"))
                .Select(p => new Sample(category, p, true, "abnormal", masks.GetValueOrDefault(Path.GetFileNameWithoutExtension(p)))))
            .ToList();
    }
}

/// <summary>Opens a dataset folder, detecting its layout.</summary>
public static class Datasets
{
    /// <summary>VisA if <c>split_csv/1cls.csv</c> exists, MVTec AD if a sub-folder has <c>train/good</c>, else the plain folder layout.</summary>
    /// <exception cref="DirectoryNotFoundException">the folder does not exist or matches no layout.</exception>
    public static IDataset Open(string root)
    {
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"dataset folder '{Path.GetFullPath(root)}' does not exist");
        if (VisaDataset.Matches(root)) return new VisaDataset(root);
        if (MVTecDataset.Matches(root)) return new MVTecDataset(root);
        if (FolderDataset.Matches(root)) return new FolderDataset(root);
        throw new DirectoryNotFoundException(
            $"'{Path.GetFullPath(root)}' matches no known layout: MVTec AD (category/train/good), VisA (split_csv/1cls.csv) or plain (normal/, abnormal/, masks/)");
    }
}
