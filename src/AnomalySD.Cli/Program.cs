using AnomalySD.Cli;
using AnomalySD.Native;
using CommandLine;

// Entry point of `anomalysd`. Each verb is an options class + a handler; a native failure is reported as
// one line naming the problem (no stack trace) and exit code 2; bad usage exits 1.
var parser = new Parser(s => { s.HelpWriter = Console.Error; s.CaseInsensitiveEnumValues = true; });
var result = parser.ParseArguments<InfoOptions>(args);
try
{
    return result.MapResult(
        (InfoOptions o) => InfoCommand.Run(o, Console.Out),
        _ => 1);
}
catch (AsdException e)
{
    Console.Error.WriteLine($"anomalysd: error: {e.Message}");
    return 2;
}
catch (DllNotFoundException e)
{
    Console.Error.WriteLine($"anomalysd: error: {e.Message}");
    return 2;
}
