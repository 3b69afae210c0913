using AnomalySD.Engine;
using CommandLine;

namespace AnomalySD.Cli;

[Verb("info", HelpText = "Print the engine version, the libtorch version, the devices and the CPU thread count.")]
public sealed class InfoVerb
{
    [Option("threads", HelpText = "Set libtorch's CPU thread count before reporting it (>= 1).")]
    public int? Threads { get; set; }
}

public static class InfoCommand
{
    public static int Run(InfoVerb options, TextWriter output)
    {
        if (options.Threads is int t) EngineInfo.SetNumThreads(t);
        var info = EngineInfo.Query();
        output.WriteLine($"anomalysd engine   {info.EngineVersion}");
        output.WriteLine($"libtorch           {info.TorchVersion}");
        output.WriteLine($"CUDA kernels       {(info.BuiltWithCuda ? "built" : "not built (CPU build)")}");
        output.WriteLine($"CUDA available     {(info.CudaAvailable ? "yes" : "no")}");
        output.WriteLine($"devices            cpu{string.Concat(info.CudaDevices.Select((n, i) => $", cuda:{i} ({n})"))}");
        output.WriteLine($"CPU threads        {info.NumThreads}");
        return 0;
    }
}
