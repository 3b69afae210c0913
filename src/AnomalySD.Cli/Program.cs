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
        errors => errors.IsHelp() || errors.IsVersion() ? 0 : ReportConfigErrors(errors));
}
catch (Exception e) when (e is AsdException or DllNotFoundException or IOException or InvalidDataException or ImageLoadException
                              or KeyNotFoundException or ArgumentException or UnauthorizedAccessException or FormatException)
{
    Console.Error.WriteLine($"anomalysd: error: {e.Message.Split('\n')[0].Trim()}");
    return 2;
}
catch (Exception e)
{
    // Anything else is a bug: one line for the user, the stack trace only with --verbose.
    Console.Error.WriteLine($"anomalysd: internal error ({e.GetType().Name}): {e.Message}");
    if (args.Contains("--verbose")) Console.Error.WriteLine(e);
    return 2;
}

static int Run(EngineOptions o, Func<int> body)
{
    try { o.Validate(); } // every flag is checked before any model is built or data is read
    catch (ArgumentException e) { throw new ArgumentException(CliSupport.WithConfigSource(e.Message), e); }
    if (o.Threads is int t) EngineInfo.SetNumThreads(t);
    EngineInfo.ManualSeed(o.Seed);
    return body();
}

// The parser has printed its usage text; a value that came from --config also gets a line naming the file.
static int ReportConfigErrors(IEnumerable<Error> errors)
{
    foreach (var e in errors.OfType<NamedError>())
    {
        if (CliSupport.ConfigFileFor(e.NameInfo.LongName) is string file)
            Console.Error.WriteLine($"anomalysd: error: {file}: the value of \"{e.NameInfo.LongName}\" is not valid for --{e.NameInfo.LongName}");
    }
    return 1;
}
