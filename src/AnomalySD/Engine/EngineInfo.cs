using AnomalySD.Native;

namespace AnomalySD.Engine;

/// <summary>What the loaded native engine is and can use.</summary>
/// <param name="EngineVersion">Version of libanomalysd ("MAJOR.MINOR.PATCH").</param>
/// <param name="TorchVersion">Version of the libtorch it was built against.</param>
/// <param name="BuiltWithCuda">Whether the CUDA kernels were compiled in (ANOMALYSD_CUDA=ON).</param>
/// <param name="CudaAvailable">Whether a CUDA device can be used now.</param>
/// <param name="CudaDevices">Names of the CUDA devices, index = device ordinal.</param>
/// <param name="NumThreads">libtorch intra-op CPU threads.</param>
public sealed record EngineInfo(
    string EngineVersion, string TorchVersion, bool BuiltWithCuda, bool CudaAvailable,
    IReadOnlyList<string> CudaDevices, int NumThreads)
{
    /// <summary>Queries the native engine (loads it on first use).</summary>
    public static unsafe EngineInfo Query()
    {
        AsdException.Check(NativeMethods.asd_engine_version(out byte* engine));
        AsdException.Check(NativeMethods.asd_torch_version(out byte* torch));
        AsdException.Check(NativeMethods.asd_built_with_cuda(out int cuda));
        AsdException.Check(NativeMethods.asd_cuda_device_count(out int available, out int count));
        AsdException.Check(NativeMethods.asd_get_num_threads(out int threads));
        var names = new List<string>();
        byte* buffer = stackalloc byte[256];
        for (int i = 0; i < count; i++)
        {
            AsdException.Check(NativeMethods.asd_cuda_device_name(i, buffer, 256));
            names.Add(NativeMethods.FromUtf8(buffer));
        }
        return new EngineInfo(NativeMethods.FromUtf8(engine), NativeMethods.FromUtf8(torch), cuda != 0, available != 0, names, threads);
    }

    /// <summary>Sets libtorch's intra-op CPU threads (>= 1).</summary>
    public static void SetNumThreads(int threads) => AsdException.Check(NativeMethods.asd_set_num_threads(threads));

    /// <summary>Seeds the engine's CPU and CUDA generators.</summary>
    public static void ManualSeed(ulong seed) => AsdException.Check(NativeMethods.asd_manual_seed(seed));

    /// <summary>Resets the peak-memory counter of <paramref name="device"/> ("cpu": peak RSS; "cuda[:N]": allocator peak).</summary>
    public static void ResetPeakMemory(string device) => AsdException.Check(NativeMethods.asd_peak_memory_reset(device));

    /// <summary>The device's GEMM throughput in GFLOP/s, measured now (best of 5 products of two n x n matrices in <paramref name="dtype"/>).</summary>
    public static double GemmPeakGflops(string device, ModelDtype dtype = ModelDtype.F32, int n = 2048)
    {
        AsdException.Check(NativeMethods.asd_gemm_peak_gflops(device, (AsdDtype)dtype, n, out double gflops));
        return gflops;
    }

    /// <summary>Peak memory in bytes since the last reset (see <see cref="ResetPeakMemory"/>).</summary>
    public static long PeakMemory(string device)
    {
        AsdException.Check(NativeMethods.asd_peak_memory(device, out long bytes));
        return bytes;
    }

    /// <summary><see cref="ResetPeakMemory"/> where the device counts its peak; nothing where it cannot.</summary>
    public static void TryResetPeakMemory(string device)
    {
        try { ResetPeakMemory(device); } catch (AsdUnsupportedException) { }
    }

    /// <summary><see cref="PeakMemory"/>, or 0 where the device cannot count its peak.</summary>
    public static long TryPeakMemory(string device)
    {
        try { return PeakMemory(device); } catch (AsdUnsupportedException) { return 0; }
    }

    /// <summary>Native engine objects alive now (all types), for leak checks.</summary>
    public static long NativeLiveObjects()
    {
        AsdException.Check(NativeMethods.asd_live_objects(out long count));
        return count;
    }
}
