using AnomalySD.Engine;
using AnomalySD.Native;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

/// <summary>The engine's ResNet18 (C++, from the converted safetensors) against ONNX Runtime on the original ONNX models.</summary>
[Collection(NativeCollection.Name)]
public sealed class ResNet18EngineTests(ITestOutputHelper output)
{
    [Fact]
    public unsafe void EnginePooledOutputEqualsOnnxRuntime()
    {
        string weights = ScoringOptions.DefaultResNet18Path()
            ?? throw new FileNotFoundException("resnet18_imagenet.safetensors not built (./build.sh writes it)");
        foreach (int kind in new[] { 0, 1 })
        {
            float[] rgb255 = ResNet18Reference.SyntheticImage(kind);
            float[] ort = ResNet18Reference.OrtFeatures(rgb255);
            float[] rgb01 = Array.ConvertAll(rgb255, v => v / 255f);
            var engine = new float[512];
            fixed (float* pi = rgb01, po = engine)
                AsdException.Check(NativeMethods.asd_resnet18_pooled(weights, pi, 1, 224, 224, po));
            double err = ort.Zip(engine, (a, b) => Math.Abs(a - (double)b)).Max();
            output.WriteLine($"image {kind}: max |engine - ONNX Runtime| = {err:G3} (max feature {ort.Max():G4})");
            Assert.True(err <= 1e-4, $"image {kind}: max abs error {err}");
        }
    }
}
