using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Native;
using CommandLine;

// Entry point of `anomalysd`. Each verb is an options class + a handler. A failure is reported as one line naming
// the problem (no stack trace): exit 2 for engine, data and I/O errors; bad usage exits 1.
try
{
    args = CliSupport.ExpandConfig(args);
    var parser = new Parser(s => { s.HelpWriter = Console.Error; s.CaseInsensitiveEnumValues = true; });
    return parser.ParseArguments<InfoOptions, FitOptionsVerb, EvalOptionsVerb, DetectOptions, BenchOptions, DemoOptions>(args).MapResult(
        (InfoOptions o) => InfoCommand.Run(o, Console.Out),
        (FitOptionsVerb o) => Run(o, () => FitEvalCommands.Fit(o)),
        (EvalOptionsVerb o) => Run(o, () => FitEvalCommands.Eval(o)),
        (DetectOptions o) => Run(o, () => BenchDetectCommands.Detect(o, Console.Out)),
        (BenchOptions o) => Run(o, () => BenchDetectCommands.Bench(o, Console.Out)),
        (DemoOptions o) => Run(o, () => DemoCommand.Run(o)),
        _ => 1);
}
catch (Exception e) when (e is AsdException or DllNotFoundException or IOException or InvalidDataException or ImageLoadException
                              or KeyNotFoundException or ArgumentException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"anomalysd: error: {e.Message}");
    return 2;
}

static int Run(EngineOptions o, Func<int> body)
{
    if (o.Threads is int t) EngineInfo.SetNumThreads(t);
    EngineInfo.ManualSeed(o.Seed);
    return body();
}
