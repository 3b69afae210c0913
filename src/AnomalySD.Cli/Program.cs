using AnomalySD.Cli;
using AnomalySD.Data;
using AnomalySD.Engine;
using CommandLine;
using CommandLine.Text;

// Entry point of `anomalysd`. Each verb is a flags class + a handler, one file per verb (FitCommand.cs, EvalCommand.cs, ...).
// Exit codes, one rule for every verb (README, "Exit codes"):
//   0  success (and --help, --version);
//   1  the command line or its options file is wrong, found before any work: an unknown verb, flag or key, a value of the wrong
//      type or out of range, flags that contradict each other. One line names the flag (and the file), or the usage text.
//   2  the command is valid but failed while working: a file or folder missing, unreadable, corrupt or of the wrong kind, an
//      output folder that holds something else or is in use, an engine error. One line names the file or the problem.
//   3  the command finished, but some inputs were skipped (unreadable images, named on stderr and in the results): detect,
//      eval and merge. A shard (eval --shard) records its skips for merge and exits 0, so a scheduler counts it complete.
try
{
    args = CliSupport.ExpandConfig(args);
    var parser = new Parser(s => { s.HelpWriter = null; s.CaseInsensitiveEnumValues = true; s.EnableDashDash = true; });
    var parsed = parser.ParseArguments<InfoVerb, FitVerb, EvalVerb, DetectVerb, ServeVerb, BenchVerb, DemoVerb, MergeVerb, ConvertVerb>(args);
    return parsed.MapResult(
        (InfoVerb o) => InfoCommand.Run(o, Console.Out),
        (FitVerb o) => Run(o, () => FitCommand.Run(o)),
        (EvalVerb o) => Run(o, () => EvalCommand.Run(o)),
        (DetectVerb o) => Run(o, () => DetectCommand.Run(o, Console.Out)),
        (ServeVerb o) => Run(o, () => ServeCommand.Run(o)),
        (BenchVerb o) => Run(o, () => BenchCommand.Run(o, Console.Out)),
        (DemoVerb o) => Run(o, () => DemoCommand.Run(o)),
        (MergeVerb o) => Validated(o.Validate, () => MergeCommand.Run(o)),
        (ConvertVerb o) => ConvertCommand.Run(o),
        errors => ReportParseErrors(parsed, errors.ToList()));
}
catch (UsageException e)
{
    Console.Error.WriteLine($"anomalysd: error: {OneLine(e.Message)}");
    return 1;
}
catch (Exception e) when (Failures.IsExpected(e))
{
    Console.Error.WriteLine($"anomalysd: error: {OneLine(e.Message)}");
    return 2;
}
catch (Exception e)
{
    // Anything else is a bug: one line for the user, the stack trace only with --verbose.
    Console.Error.WriteLine($"anomalysd: internal error ({e.GetType().Name}): {OneLine(e.Message)}");
    if (args.Contains("--verbose")) Console.Error.WriteLine(e);
    return 2;
}

static int Run(EngineFlags o, Func<int> body) => Validated(o.Validate, () =>
{
    if (o.Threads is int t) EngineInfo.SetNumThreads(t);
    EngineInfo.ManualSeed(o.Seed);
    return body();
});

// Every flag is checked before any model is built or data is read; a bad value is a usage error (exit 1).
static int Validated(Action validate, Func<int> body)
{
    try { validate(); }
    catch (ArgumentException e) { throw new UsageException(CliSupport.WithConfigSource(e.Message), e); }
    return body();
}

// One line of at most 1,000 characters: an error never floods the terminal.
static string OneLine(string message)
{
    string line = message.Split('\n')[0].Trim();
    return line.Length <= 1000 ? line : line[..997] + "...";
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
