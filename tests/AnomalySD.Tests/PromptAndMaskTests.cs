using AnomalySD.Masks;
using AnomalySD.Prompts;
using Xunit;

namespace AnomalySD.Tests;

public sealed class PromptAndMaskTests
{
    private static readonly string[] MVTec = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper"];
    private static readonly string[] Visa = ["candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"];

    [Fact]
    public void BuiltInCatalogCoversMVTecVisaAndPcb()
    {
        var catalog = PromptCatalog.BuiltIn();
        foreach (string c in MVTec.Concat(Visa).Append("pcb"))
        {
            var p = catalog.Get(c);
            Assert.False(p.IsFallback, c);
            Assert.Equal($"A perfect {p.Name}.", p.Coarse[0]); // T¹ of the paper
            Assert.NotEmpty(p.Fine);
            Assert.Equal(0.4, p.NoiseStrength);
        }
        Assert.Equal("A perfect metal nut.", catalog.Get("metal_nut").Coarse[0]);
        Assert.Equal(ObjectType.Texture, catalog.Get("carpet").ObjectType);
        Assert.Equal(ObjectType.Object, catalog.Get("bottle").ObjectType);
    }

    [Fact]
    public void UnknownCategoryFallsBackToGeneric()
    {
        var p = PromptCatalog.BuiltIn().Get("steel_gear");
        Assert.True(p.IsFallback);
        Assert.Equal("A perfect steel gear.", p.Coarse[0]);
        Assert.All(p.All, s => Assert.DoesNotContain("{name}", s));
    }

    [Fact]
    public void UserCatalogIsValidated()
    {
        string path = Path.Combine(Path.GetTempPath(), $"prompts-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(path, """{"generic": {"coarse": ["A perfect {name}."]}, "categories": {"gear": {"fine": ["A gear."], "noise_strength": 0.3}}}""");
            var p = PromptCatalog.Load(path).Get("gear");
            Assert.Equal(0.3, p.NoiseStrength);
            Assert.Equal(["A gear."], p.All);
            File.WriteAllText(path, """{"generic": {"coarse": ["x"]}, "categories": {"gear": {"fine": ["A gear."], "noise_strength": 1.5}}}""");
            Assert.Contains("categories.gear.noise_strength = 1.5 is outside [0, 1]", Assert.Throws<InvalidDataException>(() => PromptCatalog.Load(path)).Message);
            File.WriteAllText(path, "{ not json");
            Assert.StartsWith(path, Assert.Throws<InvalidDataException>(() => PromptCatalog.Load(path)).Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void GridMasksTileTheImageAtEveryScale()
    {
        var masks = MaskProposals.Grid(30, 20);
        Assert.Equal(85, masks.Count); // 1 + 4 + 16 + 64
        foreach (int k in MaskProposals.DefaultScales)
        {
            var scale = masks.Where(m => m.Scale == k).ToList();
            Assert.Equal(k * k, scale.Count);
            var cover = new int[30 * 20];
            foreach (var m in scale)
                for (int i = 0; i < cover.Length; i++) cover[i] += m.Mask.Data[i];
            Assert.All(cover, c => Assert.Equal(1, c)); // each pixel in exactly one patch
        }
        // 8x8 grid on 30 rows: patch row 1 covers rows [3, 7) (floor(30/8) = 3, floor(60/8) = 7) -> 4 rows x (5 - 2) cols.
        var m11 = masks.Single(m => m.Scale == 8 && m.Row == 1 && m.Column == 1).Mask;
        Assert.Equal(4 * 3, m11.Count);
        Assert.Equal(1, m11[3, 2]);
        Assert.Equal(0, m11[7, 2]);
        Assert.Throws<ArgumentException>(() => MaskProposals.Grid(4, 4, [8]));
    }
}
