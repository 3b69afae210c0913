using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Native;
using CommandLine;
using CommandLine.Text;

// Entry point of `anomalysd`. Each verb is a flags class + a handler, one file per verb (FitCommand.cs, EvalCommand.cs, ...). A failure is reported as one line naming
// the problem (no stack trace): exit 2 for engine, data and I/O errors; bad usage exits 1.
try
{
    args = CliSupport.ExpandConfig(args);
    var parser = new Parser(s => { s.HelpWriter = null; s.CaseInsensitiveEnumValues = true; });
    var parsed = parser.ParseArguments<InfoVerb, FitVerb, EvalVerb, DetectVerb, BenchVerb, DemoVerb, MergeVerb, ConvertVerb>(args);
    return parsed.MapResult(
        (InfoVerb o) => InfoCommand.Run(o, Console.Out),
        (FitVerb o) => Run(o, () => FitCommand.Run(o)),
        (EvalVerb o) => Run(o, () => EvalCommand.Run(o)),
        (DetectVerb o) => Run(o, () => DetectCommand.Run(o, Console.Out)),
        (BenchVerb o) => Run(o, () => BenchCommand.Run(o, Console.Out)),
        (DemoVerb o) => Run(o, () => DemoCommand.Run(o)),
        (MergeVerb o) => MergeCommand.Run(o),
        (ConvertVerb o) => ConvertCommand.Run(o),
        errors => ReportParseErrors(parsed, errors.ToList()));
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

static int Run(EngineFlags o, Func<int> body)
{
    try { o.Validate(); } // every flag is checked before any model is built or data is read
    catch (ArgumentException e) { throw new ArgumentException(CliSupport.WithConfigSource(e.Message), e); }
    if (o.Threads is int t) EngineInfo.SetNumThreads(t);
    EngineInfo.ManualSeed(o.Seed);
    return body();
}

// --help / --version: the text on stdout, exit 0. A malformed value or an unknown key that came from the --config
// file: one line naming the file and the key (exit 1). Any other parse error: the usage text on stderr (exit 1).
static int ReportParseErrors(ParserResult<object> parsed, List<Error> errors)
{
    if (errors.IsVersion())
    {
        Console.Out.WriteLine(HeadingInfo.Default);
        return 0;
    }
    bool noVerb = parsed.TypeInfo.Current == typeof(NullInstance); // list the verbs, not one verb's flags
    if (errors.IsHelp())
    {
        Console.Out.WriteLine(HelpText.AutoBuild(parsed, h => h, e => e, verbsIndex: noVerb));
        return 0;
    }
    var fromConfig = errors.Select(e => e switch
    {
        NamedError n when CliSupport.ConfigFileFor(n.NameInfo.LongName) is string file =>
            $"{file}: the value of \"{CliSupport.ConfigKeyFor(n.NameInfo.LongName)}\" is not valid for --{n.NameInfo.LongName}",
        UnknownOptionError u when CliSupport.ConfigFileFor(u.Token) is string file =>
            $"{file}: unknown key \"{CliSupport.ConfigKeyFor(u.Token)}\" (keys are the long flag names of this command, e.g. \"unet-steps\" or \"unet_steps\")",
        _ => null,
    }).OfType<string>().ToList();
    if (fromConfig.Count > 0)
    {
        foreach (string message in fromConfig) Console.Error.WriteLine($"anomalysd: error: {message}");
        return 1;
    }
    Console.Error.WriteLine(HelpText.AutoBuild(parsed, h => HelpText.DefaultParsingErrorsHandler(parsed, h), e => e, verbsIndex: noVerb));
    return 1;
}
