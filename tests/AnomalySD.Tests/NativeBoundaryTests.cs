using AnomalySD.Engine;
using AnomalySD.Native;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>The P/Invoke layer: native failures become typed managed exceptions with the native message, and
/// no handle outlives its owner.</summary>
[Collection(NativeCollection.Name)]
public sealed class NativeBoundaryTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void InfoReportsVersions()
    {
        var info = EngineInfo.Query();
        Assert.Matches(@"^\d+\.\d+\.\d+$", info.EngineVersion);
        Assert.Matches(@"^\d+\.\d+", info.TorchVersion);
        Assert.True(info.NumThreads >= 1);
        Assert.Equal(info.CudaAvailable ? info.CudaDevices.Count : 0, info.CudaDevices.Count);
    }

    [Fact]
    public void CorruptFileRaisesFormatExceptionWithNativeMessage()
    {
        string path = Path.Combine(_dir, "corrupt.safetensors");
        // Header length 1000 but the file holds 12 bytes.
        File.WriteAllBytes(path, [0xE8, 0x03, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'}', 0, 0]);
        var e = Assert.Throws<AsdFormatException>(() => TensorMap.Load(path));
        Assert.Equal(AsdStatus.Format, e.Status);
        Assert.Contains("asd_safetensors_load", e.Message);
        Assert.Contains(path, e.Message);
        Assert.Contains("header length 1000 runs past the end of the file (12 bytes)", e.Message);
    }

    [Fact]
    public void MissingFileRaisesIOException()
    {
        string path = Path.Combine(_dir, "absent.safetensors");
        var e = Assert.Throws<AsdIOException>(() => TensorMap.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void InvalidArgumentAndNotFoundAreTyped()
    {
        Assert.Contains("threads must be >= 1", Assert.Throws<AsdInvalidArgumentException>(() => EngineInfo.SetNumThreads(0)).Message);
        using var map = TensorMap.Create();
        Assert.Contains("'nope' not found", Assert.Throws<AsdNotFoundException>(() => map.Info("nope")).Message);
    }

    [Fact]
    public void SafetensorsRoundTripThroughBindings()
    {
        string path = Path.Combine(_dir, "rt.safetensors");
        float[] values = [0.5f, -1.25f, 3f, 8f, 0f, -2f];
        using (var map = TensorMap.Create())
        {
            map.SetFloat32("w", values, [2, 3], TensorDtype.F16);
            map.SetFloat32("b", [1f], [1]);
            map.Save(path, new Dictionary<string, string> { ["format"] = "pt" });
        }
        using var back = TensorMap.Load(path, TensorDtype.F32);
        Assert.Equal(["w", "b"], back.Names);
        var info = back.Info("w");
        Assert.Equal(TensorDtype.F32, info.Dtype);
        Assert.Equal([2L, 3L], info.Shape);
        Assert.Equal(values, back.GetFloat32("w")); // all exactly representable in f16
    }

    [Fact]
    public void HandlesAreReleasedAfterDispose()
    {
        long managedBefore = AsdHandle.LiveCount;
        long nativeBefore = EngineInfo.NativeLiveObjects();
        string path = Path.Combine(_dir, "leak.safetensors");
        using (var seed = TensorMap.Create())
        {
            seed.SetFloat32("x", new float[16], [4, 4]);
            seed.Save(path);
        }
        for (int i = 0; i < 50; i++)
        {
            using var map = TensorMap.Load(path);
            Assert.Equal(16, map.GetFloat32("x").Length);
            Assert.Equal(managedBefore + 1, AsdHandle.LiveCount);
            Assert.Equal(nativeBefore + 1, EngineInfo.NativeLiveObjects());
        }
        Assert.Equal(managedBefore, AsdHandle.LiveCount);
        Assert.Equal(nativeBefore, EngineInfo.NativeLiveObjects());
    }
}

/// <summary>Tests that count live handles must not run in parallel with each other.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NativeCollection
{
    public const string Name = "native";
}
