using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Evaluation;
using AnomalySD.Training;
using AnomalySD.Text;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

/// <summary>Prototype banks, error maps and distance maps through the C ABI (eq. 12-17).</summary>
[Collection(NativeCollection.Name)]
public sealed class ScoringApiTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-scoring-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A compact model with the scoring backbones (ImageNet ResNet18), no bank yet.</summary>
    internal static InpaintingModel ScoredModel()
    {
        var model = InpaintingModel.CreateCompact(1);
        Fitting.ConfigureScoring(model, new ScoringBackbones());
        return model;
    }

    /// <summary>A shared-data image at 64 x 64.</summary>
    internal static RgbImage Load(string rel) => ImageIO.LoadRgb(TestPaths.Shared(rel), 64);

    [Fact]
    public void BankSizeErrorMapAndSaveLoad()
    {
        using var model = ScoredModel();
        var shots = new[] { Load("data/bottle/train/good/000.png"), Load("data/bottle/train/good/001.png") };
        model.AddPrototypes("bottle", shots);
        // eq. 13 with 4 rotations: K x 4 x H'W' rows; ResNet18 layer2 of a 64x64 image is 8x8.
        Assert.Equal(2 * 4 * 8 * 8, model.PrototypeRows("bottle"));
        Assert.Equal(0, model.PrototypeRows("pcb"));

        var shotMap = model.ErrorMap("bottle", shots[0]);
        var defect = model.ErrorMap("bottle", Load("data/bottle/test/broken_large/000.png"));
        Assert.Equal((8, 8), (shotMap.Height, shotMap.Width));
        output.WriteLine($"E of a shot: max {shotMap.Max():G3}; E of a broken bottle: max {defect.Max():G3}");
        Assert.True(shotMap.Max() < 1e-3 * defect.Max(), "a shot is in its own bank: its E must be ~0 (eq. 14)");

        string path = Path.Combine(_dir, "banks.safetensors");
        model.SavePrototypes(path);
        using var other = ScoredModel();
        other.LoadPrototypes(path);
        Assert.Equal(defect.Data, other.ErrorMap("bottle", Load("data/bottle/test/broken_large/000.png")).Data);
    }

    [Fact]
    public void DistanceMapsAreZeroForIdenticalImages()
    {
        using var model = ScoredModel();
        var x = Load("data/bottle/train/good/000.png");
        var y = Load("data/bottle/test/contamination/000.png");
        var maps = model.DistanceMaps(x, [x, y]);
        Assert.All(maps[0].Data, v => Assert.Equal(0.0, v));
        Assert.True(maps[1].Max() > 0);
        Assert.Equal(64 * 64, maps[1].Data.Length);
    }

    [Fact]
    public void BlurFillKeepsConstantsAndUnmaskedPixels()
    {
        var img = new RgbImage(32, 32, Enumerable.Repeat(0.3f, 3 * 32 * 32).ToArray());
        var mask = Restoration.RandomRect(32, 32, new Random(1));
        var fill = Restoration.BlurFill(img, mask);
        Assert.All(fill, v => Assert.Equal(0.3f, v, 5));
        var ramp = new RgbImage(32, 32, Enumerable.Range(0, 3 * 32 * 32).Select(i => (i % 32) / 31f).ToArray());
        var f2 = Restoration.BlurFill(ramp, mask);
        for (int i = 0; i < 32 * 32; i++) if (mask.Data[i] == 0) Assert.Equal(ramp.Data[i], f2[i]);
    }

    [Fact]
    public void InpaintingRespectsTheCategoryCondition()
    {
        using var model = InpaintingModel.CreateCompact(2);
        var tok = new HashPromptTokenizer();
        var img = Load("data/pcb/train/good/000.png");
        var mask = Restoration.RandomRect(64, 64, new Random(3));
        var e = Assert.Throws<AnomalySD.Native.AsdNotFoundException>(() => model.Inpaint("pcb", img, [mask], new InpaintOptions(10)));
        Assert.Contains("unknown category 'pcb'", e.Message);
        model.SetCategory("pcb", tok.EncodePadded(["A perfect printed circuit board."]), tok.MaxLength);
        var a = model.Inpaint("pcb", img, [mask], new InpaintOptions(10, 0.4, 0, 7));
        var b = model.Inpaint("pcb", img, [mask], new InpaintOptions(10, 0.4, 0, 7, Naive: true));
        Assert.True(a[0].Data.Zip(b[0].Data, (p, q) => Math.Abs(p - q)).Max() < 1e-4, "batched and naive must agree");
    }
}
