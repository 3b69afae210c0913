using System.Globalization;
using AnomalySD.ModelPrep;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

/// <summary>Converts ResNet18.onnx once into a temp dir; shared by the tests below.</summary>
public sealed class ResNet18ConversionFixture : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("anomalysd-resnet18-").FullName;
    public string Path { get; }
    public ConvertedModel Converted { get; }
    public ResNet18Reference.Weights Weights { get; }

    public ResNet18ConversionFixture()
    {
        Path = System.IO.Path.Combine(Dir, ResNet18Converter.FileName);
        Converted = ResNet18Converter.ConvertToFile(ResNet18Converter.DefaultModelPath(), ResNet18Converter.DefaultPreprocessPath(), Path);
        Weights = ResNet18Reference.Weights.Load(Path);
    }

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}

/// <summary>The ImageNet ResNet18 conversion (ONNX -> torchvision-named safetensors) and its numerical check
/// against ONNX Runtime on the original ONNX models.</summary>
[Collection(NativeCollection.Name)]
public sealed class ResNet18ConversionTests(ResNet18ConversionFixture fx, ITestOutputHelper output) : IClassFixture<ResNet18ConversionFixture>
{
    [Fact]
    public void EveryTorchvisionKeyHasTheTorchvisionShape()
    {
        foreach (var (name, shape) in ResNet18Layout.TorchvisionFeatures)
        {
            Assert.True(fx.Weights.Shapes.ContainsKey(name), $"{name} missing");
            Assert.Equal(shape, fx.Weights.Shapes[name]);
        }
        Assert.Equal(new long[] { 3, 224, 224 }, fx.Weights.Shapes["preprocess.mean"]);
        // The CNTK "ResNet18" has a third BasicBlock in stage 4; it is kept as layer4.2.* (no conv biases).
        Assert.Equal("2,2,2,3", fx.Weights.Metadata["blocks"]);
        var extra = fx.Weights.Shapes.Keys.Except(ResNet18Layout.TorchvisionFeatures.Select(t => t.Name)).Order().ToList();
        Assert.All(extra, k => Assert.True(k.StartsWith("layer4.2.", StringComparison.Ordinal) || k == "preprocess.mean", k));
        Assert.Equal(11, extra.Count);
        Assert.Equal(fx.Weights.Shapes["layer4.1.conv1.weight"], fx.Weights.Shapes["layer4.2.conv1.weight"]);
        Assert.DoesNotContain(fx.Weights.Shapes.Keys, k => k.EndsWith(".bias", StringComparison.Ordinal) && k.Contains("conv", StringComparison.Ordinal));
    }

    [Fact]
    public void MetadataHoldsPadsStridesEpsAndInputConvention()
    {
        var md = fx.Weights.Metadata;
        Assert.Equal("3,3,2,2", md["pads.conv1"]);
        Assert.Equal("2,2", md["strides.conv1"]);
        Assert.Equal("1,1,0,0", md["pads.maxpool"]);
        Assert.Equal("3,3", md["kernel.maxpool"]);
        foreach (int s in new[] { 2, 3, 4 })
        {
            Assert.Equal("1,1,0,0", md[$"pads.layer{s}.0.conv1"]);
            Assert.Equal("2,2", md[$"strides.layer{s}.0.conv1"]);
            Assert.Equal("0,0,0,0", md[$"pads.layer{s}.0.downsample.0"]);
            Assert.Equal("2,2", md[$"strides.layer{s}.0.downsample.0"]);
        }
        Assert.Equal("1,1,1,1", md["pads.layer1.0.conv1"]);
        Assert.Equal("7,7", md["kernel.avgpool"]);
        Assert.Equal(1e-5f, float.Parse(md["bn.eps"], CultureInfo.InvariantCulture));
        Assert.Equal("BGR", md["input.channel_order"]);
        Assert.Equal("2,1,0", md["preprocess.channel_perm"]);
        Assert.Equal("none", md["input.std"]);
        double[] means = md["preprocess.mean_per_channel"].Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(103.06, means[0], 0.01);
        Assert.Equal(115.90, means[1], 0.01);
        Assert.Equal(123.15, means[2], 0.01);
        // The per-channel means are the means of the stored image.
        float[] img = fx.Weights.Tensors["preprocess.mean"];
        for (int c = 0; c < 3; c++)
            Assert.Equal(means[c], img.AsSpan(c * 224 * 224, 224 * 224).ToArray().Average(v => (double)v), 1e-4);
    }

    [Fact]
    public void ReferenceFromConvertedWeightsMatchesOnnxRuntime()
    {
        for (int kind = 0; kind < 2; kind++)
        {
            float[] rgb = ResNet18Reference.SyntheticImage(kind);
            float[] ort = ResNet18Reference.OrtFeatures(rgb);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            float[] mine = ResNet18Reference.ReferenceFeatures(fx.Weights, rgb);
            double err = ort.Zip(mine, (a, b) => Math.Abs((double)a - b)).Max();
            output.WriteLine($"image {kind}: max |ORT - reference| = {err:E3} over 512 features (max |ORT| {ort.Max(Math.Abs):F3}, reference {sw.ElapsedMilliseconds} ms)");
            Assert.True(ort.Any(v => v != 0), "ORT output all zero");
            Assert.True(err <= 1e-4, $"image {kind}: max abs error {err:E3} > 1e-4");
        }
    }

    /// <summary>
    /// The export's asymmetric pads (conv1 3,3,2,2; stride-2 3x3 convs and max pool 1,1,0,0) have torchvision's
    /// begin pads, and at 224x224 (even sizes at every stride-2 layer) the extra end row/column of torchvision's
    /// symmetric padding is never read: the features are the same. (At odd sizes only the output size differs.)
    /// </summary>
    [Fact]
    public void TorchvisionSymmetricPaddingGivesTheSameFeaturesAt224()
    {
        var md = new Dictionary<string, string>(fx.Weights.Metadata);
        foreach (string k in md.Keys.Where(k => k.StartsWith("pads.", StringComparison.Ordinal)).ToList())
            md[k] = md[k] switch { "3,3,2,2" => "3,3,3,3", "1,1,0,0" => "1,1,1,1", var v => v };
        var symmetric = new ResNet18Reference.Weights { Tensors = fx.Weights.Tensors, Shapes = fx.Weights.Shapes, Metadata = md };
        float[] rgb = ResNet18Reference.SyntheticImage(0);
        float[] ort = ResNet18Reference.OrtFeatures(rgb);
        float[] sym = ResNet18Reference.ReferenceFeatures(symmetric, rgb);
        double err = ort.Zip(sym, (a, b) => Math.Abs((double)a - b)).Max();
        output.WriteLine($"symmetric pads: max |ORT - reference| = {err:E3}");
        Assert.True(err <= 1e-4, $"max abs error {err:E3} > 1e-4");
    }

    [Fact]
    public void SecondConversionIsByteIdentical()
    {
        string again = Path.Combine(fx.Dir, "again.safetensors");
        ResNet18Converter.ConvertToFile(ResNet18Converter.DefaultModelPath(), ResNet18Converter.DefaultPreprocessPath(), again);
        Assert.Equal(File.ReadAllBytes(fx.Path), File.ReadAllBytes(again));
    }

    [Fact]
    public void MissingOnnxFileIsNamed()
    {
        string missing = Path.Combine(fx.Dir, "nope", "ResNet18.onnx");
        var e = Assert.Throws<ModelPrepException>(() => ResNet18Converter.Read(missing, ResNet18Converter.DefaultPreprocessPath()));
        Assert.Contains(missing, e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void CorruptOnnxFileIsNamed()
    {
        string truncated = Path.Combine(fx.Dir, "truncated.onnx");
        byte[] bytes = File.ReadAllBytes(ResNet18Converter.DefaultPreprocessPath());
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<ModelPrepException>(() => ResNet18Converter.Read(ResNet18Converter.DefaultModelPath(), truncated));
        Assert.Contains(truncated, e.Message);

        string garbage = Path.Combine(fx.Dir, "garbage.onnx");
        File.WriteAllText(garbage, "this is not an onnx file");
        e = Assert.Throws<ModelPrepException>(() => ResNet18Converter.Load(garbage));
        Assert.Contains(garbage, e.Message);
    }
}
