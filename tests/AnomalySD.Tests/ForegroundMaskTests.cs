using AnomalySD.Data;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

public sealed class ForegroundMaskTests(ITestOutputHelper output)
{
    private static RgbImage Synthetic(int size, Func<int, int, (float R, float G, float B)> colour)
    {
        var data = new float[3 * size * size];
        for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
        {
            var (r, g, b) = colour(y, x);
            data[y * size + x] = r; data[size * size + y * size + x] = g; data[2 * size * size + y * size + x] = b;
        }
        return new RgbImage(size, size, data);
    }

    [Fact]
    public void DiscOnUniformBackgroundIsFound()
    {
        // A bright disc of radius 40 centred in a 200x200 dark image, with a dark hole of radius 10 at its centre
        // (holes are filled: the object is the disc, area pi * 40^2 = 5027 px).
        var img = Synthetic(200, (y, x) =>
        {
            double r = Math.Sqrt((y - 100) * (y - 100) + (x - 100) * (x - 100));
            return r < 10 ? (0.1f, 0.1f, 0.1f) : r < 40 ? (0.8f, 0.7f, 0.6f) : (0.1f, 0.1f, 0.12f);
        });
        var m = ForegroundMask.Compute(img);
        Assert.Equal(1, m[100, 100]); // hole filled
        Assert.Equal(1, m[100, 130]);
        Assert.Equal(0, m[5, 5]);
        Assert.InRange(m.Count, 5027 * 0.85, 5027 * 1.15);
    }

    [Fact]
    public void UniformImageFallsBackToFullMask()
    {
        var m = ForegroundMask.Compute(Synthetic(64, (_, _) => (0.5f, 0.5f, 0.5f)));
        Assert.Equal(64 * 64, m.Count);
    }

    [Fact]
    public void SharedDataBottleAndPcb()
    {
        // bottle (MVTec AD): a bottle seen from the top fills the middle of a dark frame -> a central object
        // covering a large part of the image but not the corners.
        var bottle = ImageIO.LoadRgb(TestPaths.Shared("data/bottle/train/good/000.png"), 256);
        var m = ForegroundMask.Compute(bottle);
        double fraction = m.Count / (double)(256 * 256);
        output.WriteLine($"bottle/train/good/000.png: foreground {fraction:P1}");
        Assert.InRange(fraction, 0.3, 0.9);
        Assert.Equal(1, m[128, 128]);
        Assert.Equal(0, m[2, 2]);
        // pcb (DeepPCB, binarised boards): the object detector finds only the copper traces (defects such as
        // spurious copper lie on the background), so the catalog treats pcb as a texture: whole-image m_f.
        var pcb = ImageIO.LoadRgb(TestPaths.Shared("data/pcb/train/good/000.png"), 256);
        double traces = ForegroundMask.Compute(pcb).Count / (double)(256 * 256);
        output.WriteLine($"pcb/train/good/000.png: object mask {traces:P1} (traces only); catalog: texture");
        Assert.InRange(traces, 0.05, 0.5);
        Assert.Equal(AnomalySD.Prompts.ObjectType.Texture, AnomalySD.Prompts.PromptCatalog.BuiltIn().Get("pcb").ObjectType);
    }
}
