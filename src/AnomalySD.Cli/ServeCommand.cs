using AnomalySD.Detection;
using AnomalySD.Serving;
using CommandLine;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Cli;

[Verb("serve", HelpText = "Serve a checkpoint over HTTP with a warm model and dynamic batching: POST /v1/categories/{category}/detect, probes, /metrics, /openapi/v1.json.")]
public sealed class ServeVerb : ScoringFlags
{
    [Option("checkpoint", Required = true, HelpText = "Checkpoint written by fit.")]
    public string Checkpoint { get; set; } = "";

    [Option("host", Default = "127.0.0.1", HelpText = "Address to bind (loopback by default; 0.0.0.0 for every interface, as in a container).")]
    public string Host { get; set; } = "127.0.0.1";

    [Option("port", Default = 8080, HelpText = "TCP port (0: any free port).")]
    public int Port { get; set; } = 8080;

    [Option("max-batch", Default = 8, HelpText = "Most images scored in one engine call (1: batching off).")]
    public int MaxBatch { get; set; } = 8;

    [Option("max-delay-ms", Default = 5.0, HelpText = "Longest a batch waits for more images of its category, from its first image's arrival.")]
    public double MaxDelayMs { get; set; } = 5;

    [Option("max-queue", Default = 64, HelpText = "Most images waiting for an engine; beyond it requests are answered 503 with Retry-After.")]
    public int MaxQueue { get; set; } = 64;

    [Option("max-upload-mb", Default = 32.0, HelpText = "Largest request body, in MiB (413 beyond it).")]
    public double MaxUploadMb { get; set; } = 32;

    [Option("api-key-file", HelpText = "A file holding the API key that /v1 requests must carry (Authorization: Bearer KEY or X-API-Key: KEY).")]
    public string? ApiKeyFile { get; set; }

    [Option("request-timeout-s", Default = 60.0, HelpText = "Longest a request may take (503 past it).")]
    public double RequestTimeoutSeconds { get; set; } = 60;

    [Option("shutdown-grace-s", Default = 30.0, HelpText = "On SIGTERM/SIGINT: how long in-flight requests get to finish.")]
    public double ShutdownGraceSeconds { get; set; } = 30;

    public override void Validate()
    {
        base.Validate();
        Require(Shard is null && ShardCount is null, "serve scores what it is sent: --shard and --shard-count do not apply");
        Require(TransductiveMode == TransductiveMode.Off, "serve scores each request on its own: --transductive needs a whole set of images (use eval or detect)");
        Require(ApiKeyFile is null || File.Exists(ApiKeyFile), $"--api-key-file '{ApiKeyFile}' does not exist");
        Options().Validate();
    }

    /// <summary>The server's options (the key read from its file, surrounding whitespace trimmed).</summary>
    public ServeOptions Options() => new(Host, Port, MaxBatch, TimeSpan.FromMilliseconds(MaxDelayMs), MaxQueue, (long)(MaxUploadMb * 1048576),
        ApiKeyFile is null ? null : File.ReadAllText(ApiKeyFile).Trim(), TimeSpan.FromSeconds(RequestTimeoutSeconds), TimeSpan.FromSeconds(ShutdownGraceSeconds));
}

public static class ServeCommand
{
    public static int Run(ServeVerb o)
    {
        using var logs = CliSupport.Logging(o.Verbose);
        var log = logs.CreateLogger("serve");
        var server = DetectionServer.StartAsync(o.Options(), () => Detector.Open(o.Checkpoint, o.DetectorSettings(), log), logs).GetAwaiter().GetResult();
        var ready = server.Ready.ContinueWith(t => t.Exception, TaskContinuationOptions.OnlyOnFaulted);
        server.WaitForShutdownAsync().GetAwaiter().GetResult();
        log.LogInformation("stopping: in-flight requests finish (grace {Grace} s)", o.ShutdownGraceSeconds);
        server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        if (server.Ready.IsFaulted) throw server.Ready.Exception!.InnerException!;
        return 0;
    }
}
