using AnomalySD.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace AnomalySD.Tests;

public sealed class DataTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-data-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void MVTecLayoutOfSharedDataMatchesItsReadme()
    {
        // ../shared/data/README.md: bottle train/good 10; test good 20, broken_large 20, broken_small 22,
        // contamination 21. pcb train/good 10; test good 20, defect 30.
        var ds = Datasets.Open(TestPaths.Shared("data"));
        Assert.IsType<MVTecDataset>(ds);
        Assert.Equal(["bottle", "pcb"], ds.Categories);
        Assert.Equal(10, ds.Train("bottle").Count);
        var test = ds.Test("bottle");
        Assert.Equal(83, test.Count);
        Assert.Equal(20, test.Count(s => !s.IsAnomalous));
        Assert.Equal(22, test.Count(s => s.DefectType == "broken_small"));
        Assert.All(test.Where(s => s.IsAnomalous), s =>
        {
            // Paired by stem: test/<defect>/<stem>.png <-> ground_truth/<defect>/<stem>_mask.png
            Assert.NotNull(s.MaskPath);
            Assert.Equal($"{s.Stem}_mask", Path.GetFileNameWithoutExtension(s.MaskPath));
            Assert.Equal(s.DefectType, Path.GetFileName(Path.GetDirectoryName(s.MaskPath)));
        });
        Assert.Equal(50, ds.Test("pcb").Count);
        var e = Assert.Throws<KeyNotFoundException>(() => ds.Train("carpet"));
        Assert.Contains("unknown category 'carpet'", e.Message);
        Assert.Contains("bottle, pcb", e.Message);
    }

    [Fact]
    public void RealImagesDecodeToRgbAndMasksToBinary()
    {
        var pcb = ImageIO.LoadRgb(TestPaths.Shared("data/pcb/train/good/000.png"), 64); // 640x640 grayscale
        Assert.Equal((64, 64), (pcb.Width, pcb.Height));
        Assert.Equal(pcb.Data.AsSpan(0, 4096).ToArray(), pcb.Data.AsSpan(4096, 4096).ToArray()); // grey: R == G
        var mask = ImageIO.LoadMask(TestPaths.Shared("data/bottle/ground_truth/broken_large/000_mask.png"), 0, 900, 900);
        Assert.Equal(900, mask.Width);
        Assert.True(mask.Count > 0 && mask.Count < 900 * 900);
        Assert.All(mask.Data, v => Assert.True(v is 0 or 1));
    }

    [Fact]
    public void PixelFormatsAllBecomeRgb()
    {
        string p16 = Path.Combine(_dir, "rgb48.png"), gray = Path.Combine(_dir, "gray.png"), rgba = Path.Combine(_dir, "rgba.png"),
            pal = Path.Combine(_dir, "palette.png");
        using (var img = new Image<Rgb48>(4, 4, new Rgb48(65535, 0, 32896))) img.SaveAsPng(p16);
        using (var img = new Image<L16>(4, 4, new L16(65535))) img.SaveAsPng(gray);
        using (var img = new Image<Rgba32>(4, 4, new Rgba32(10, 20, 30, 0))) img.SaveAsPng(rgba);
        using (var img = new Image<Rgba32>(4, 4, new Rgba32(255, 0, 0, 255)))
            img.SaveAsPng(pal, new PngEncoder { ColorType = PngColorType.Palette });
        var a = ImageIO.LoadRgb(p16, 0);
        Assert.Equal(1f, a[0, 0, 0]);
        Assert.Equal(0f, a[1, 0, 0]);
        Assert.Equal(128 / 255f, a[2, 0, 0], 3);
        Assert.Equal(1f, ImageIO.LoadRgb(gray, 0)[2, 3, 3]);
        Assert.Equal(20 / 255f, ImageIO.LoadRgb(rgba, 0)[1, 1, 1], 6); // alpha dropped, colour kept
        var p = ImageIO.LoadRgb(pal, 0);
        Assert.Equal((1f, 0f, 0f), (p[0, 2, 2], p[1, 2, 2], p[2, 2, 2]));
    }

    [Fact]
    public void ExifOrientationIsApplied()
    {
        // A 4 wide x 2 high image whose EXIF says "rotate 90° clockwise" (orientation 6) is 2 wide x 4 high once applied.
        string path = Path.Combine(_dir, "rotated.png");
        using (var img = new Image<Rgb24>(4, 2, new Rgb24(0, 0, 0)))
        {
            img[0, 0] = new Rgb24(255, 255, 255); // top-left pixel
            img.Metadata.ExifProfile = new ExifProfile();
            img.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
            img.SaveAsPng(path);
        }
        var loaded = ImageIO.LoadRgb(path, 0);
        Assert.Equal((2, 4), (loaded.Width, loaded.Height));
        Assert.Equal(1f, loaded[0, 0, 1]); // top-left moves to top-right under a 90° clockwise turn
    }

    [Fact]
    public void CorruptAndMissingFilesNameThePath()
    {
        string bad = Path.Combine(_dir, "broken.png");
        File.WriteAllBytes(bad, [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3]);
        var e = Assert.Throws<ImageLoadException>(() => ImageIO.LoadRgb(bad, 32));
        Assert.StartsWith(bad, e.Message);
        string text = Path.Combine(_dir, "notes.png");
        File.WriteAllText(text, "hello");
        Assert.Contains("not a recognised image format", Assert.Throws<ImageLoadException>(() => ImageIO.LoadRgb(text, 32)).Message);
        Assert.Contains("file not found", Assert.Throws<ImageLoadException>(() => ImageIO.LoadRgb(Path.Combine(_dir, "none.png"), 32)).Message);
        string mask = Path.Combine(_dir, "m.png");
        using (var img = new Image<L8>(8, 8)) img.SaveAsPng(mask);
        Assert.Contains("mask is 8x8 but its image is 16x16", Assert.Throws<ImageLoadException>(() => ImageIO.LoadMask(mask, 0, 16, 16)).Message);
    }

    [Fact]
    public void ShotSelectionIsSortedOrSeeded()
    {
        var train = Enumerable.Range(0, 10).Select(i => new Sample("c", $"/d/{9 - i:000}.png", false, "good", null)).ToList();
        Assert.Equal(["/d/000.png", "/d/001.png"], ShotSelection.Select(train, 2).Select(s => s.ImagePath));
        var a = ShotSelection.Select(train, 3, seed: 7).Select(s => s.ImagePath).ToList();
        Assert.Equal(a, ShotSelection.Select(train, 3, seed: 7).Select(s => s.ImagePath));
        Assert.Equal(a.OrderBy(x => x, StringComparer.Ordinal), a);
        Assert.Empty(ShotSelection.Select(train, 0));
        Assert.Contains("11 shots requested but only 10", Assert.Throws<InvalidDataException>(() => ShotSelection.Select(train, 11)).Message);
    }

    [Fact]
    public void VisaCsvLayout()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "split_csv"));
        File.WriteAllLines(VisaDataset.CsvPath(_dir),
        [
            "object,split,label,image,mask",
            "candle,train,normal,candle/Data/Images/Normal/0001.JPG,",
            "candle,train,normal,candle/Data/Images/Normal/0000.JPG,",
            "candle,test,anomaly,candle/Data/Images/Anomaly/0100.JPG,candle/Data/Masks/Anomaly/0100.png",
            "candle,test,normal,candle/Data/Images/Normal/0200.JPG,",
            "pcb1,test,anomaly,pcb1/Data/Images/Anomaly/0001.JPG,pcb1/Data/Masks/Anomaly/0001.png",
        ]);
        var ds = Datasets.Open(_dir);
        Assert.IsType<VisaDataset>(ds);
        Assert.Equal(["candle", "pcb1"], ds.Categories);
        Assert.Equal(["0000", "0001"], ds.Train("candle").Select(s => s.Stem));
        var anomaly = ds.Test("candle").Single(s => s.IsAnomalous);
        Assert.Equal(Path.Combine(_dir, "candle/Data/Masks/Anomaly/0100.png"), anomaly.MaskPath);
        Assert.Null(ds.Test("candle").Single(s => !s.IsAnomalous).MaskPath);

        File.AppendAllLines(VisaDataset.CsvPath(_dir), ["pcb1,test,broken,x.JPG,"]);
        Assert.Contains("1cls.csv:7: label must be 'normal' or 'anomaly'", Assert.Throws<InvalidDataException>(() => new VisaDataset(_dir)).Message);
    }

    [Fact]
    public void PlainFolderLayoutPairsMasksByStem()
    {
        string root = Path.Combine(_dir, "widget");
        foreach (string d in new[] { "normal", "abnormal", "masks" }) Directory.CreateDirectory(Path.Combine(root, d));
        foreach (string f in new[] { "normal/a.png", "normal/b.png", "abnormal/z.png", "abnormal/y.png", "masks/z_mask.png", "masks/y.png" })
            using (var img = new Image<L8>(4, 4)) img.SaveAsPng(Path.Combine(root, f));
        var ds = Datasets.Open(root);
        Assert.Equal(["widget"], ds.Categories);
        Assert.Equal(2, ds.Train("widget").Count);
        var test = ds.Test("widget");
        Assert.Equal(4, test.Count);
        Assert.Equal(Path.Combine(root, "masks", "y.png"), test.Single(s => s.Stem == "y").MaskPath);
        Assert.Equal(Path.Combine(root, "masks", "z_mask.png"), test.Single(s => s.Stem == "z").MaskPath);
        Assert.Contains("matches no known layout", Assert.Throws<DirectoryNotFoundException>(() => Datasets.Open(Path.Combine(root, "masks"))).Message);
    }
}
