using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using AnomalySD.Data;
using AnomalySD.Detection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace AnomalySD.Serving;

/// <summary>
/// <c>anomalysd serve</c>: a warm <see cref="Detector"/> behind Kestrel. Probes at <c>/v2/health/live</c> and <c>/v2/health/ready</c>
/// (KServe / Open Inference Protocol paths; ready once the checkpoint is loaded and every category has scored a warm-up image on every
/// engine), <c>GET /v1/categories</c>, <c>POST /v1/categories/{category}/detect</c> (one image as the body, or multipart parts named
/// "image"), <c>/metrics</c> (Prometheus) and <c>/openapi/v1.json</c>. Requests are scored through <see cref="BatchScheduler"/>.
/// Bad input is answered with a JSON error and the server keeps serving: 400 undecodable, truncated or oversized image or bad query,
/// 401 missing or wrong key, 404 unknown category, 413 body over the limit, 415 other media type, 503 (Retry-After) queue full or
/// timed out, 500 an engine error.
/// </summary>
public sealed class DetectionServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ServeOptions _options;
    private readonly ServingState _state;

    private DetectionServer(WebApplication app, ServeOptions options, ServingState state)
    {
        _app = app;
        _options = options;
        _state = state;
    }

    /// <summary>The port the server listens on (the one bound when <see cref="ServeOptions.Port"/> is 0).</summary>
    public int Port { get; private set; }

    /// <summary>Completes when the server is ready (warm-up done), or faults when loading failed.</summary>
    public Task Ready => _state.Ready.Task;

    /// <summary>
    /// Starts listening at once (the probes answer; ready is 503 until the model is warm), then loads the detector with
    /// <paramref name="load"/> and warms it up in the background.
    /// </summary>
    /// <param name="load">Opens the <see cref="Detector"/> (called once, off the request path); the server owns and disposes it.</param>
    /// <param name="warmupGate">Awaited before loading (tests hold the server un-ready with it); null: none.</param>
    public static async Task<DetectionServer> StartAsync(ServeOptions options, Func<Detector> load, ILoggerFactory logs, Task? warmupGate = null)
    {
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(logs);
        builder.Services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
        // The detect body is read by hand (a raw image or multipart parts), so its media types are described here; declaring them with
        // .Accepts() would let routing answer other types with a bare 415 instead of the JSON error.
        builder.Services.AddOpenApi(o => o.AddOperationTransformer((operation, context, _) =>
        {
            if (context.Description.RelativePath?.EndsWith("/detect", StringComparison.Ordinal) == true)
                operation.RequestBody = new Microsoft.OpenApi.OpenApiRequestBody
                {
                    Required = true,
                    Description = "One image as the body, or multipart/form-data with one or more parts named \"image\".",
                    Content = ServeOptions.ImageTypes.Append("multipart/form-data")
                        .ToDictionary(t => t, _ => new Microsoft.OpenApi.OpenApiMediaType()),
                };
            return Task.CompletedTask;
        }));
        builder.Services.ConfigureHttpJsonOptions(j => j.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.ResolvedShutdownGrace);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxUploadBytes;
            k.AddServerHeader = false;
        });
        string host = options.Host is "*" or "0.0.0.0" ? "0.0.0.0" : options.Host;
        builder.WebHost.UseUrls($"http://{(host.Contains(':') ? $"[{host}]" : host)}:{options.Port}");
        var app = builder.Build();
        var log = logs.CreateLogger("serve");
        var state = new ServingState(options, new ServeMetrics(), log);
        app.UseHttpMetrics();
        Endpoints.Map(app, state);
        // The exposition is prometheus-net's (text format 0.0.4); mapped as a route so that the OpenAPI description lists it.
        app.MapGet("/metrics", async (HttpContext http) =>
        {
            http.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await Prometheus.Metrics.DefaultRegistry.CollectAndExportAsTextAsync(http.Response.Body, http.RequestAborted);
            return Results.Empty;
        }).WithName("metrics").Produces(StatusCodes.Status200OK, contentType: "text/plain");
        app.MapOpenApi("/openapi/{documentName}.json");
        var server = new DetectionServer(app, options, state);
        await app.StartAsync();
        server.Port = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses
            .Select(a => new Uri(a).Port).First();
        log.LogInformation("listening on http://{Host}:{Port} (not ready until the model is loaded and warm)", host, server.Port);
        _ = Task.Run(async () =>
        {
            try
            {
                if (warmupGate is not null) await warmupGate;
                state.Start(load());
            }
            catch (Exception e)
            {
                log.LogError("loading failed: {Message}", e.Message);
                state.Ready.TrySetException(e);
            }
        });
        return server;
    }

    /// <summary>Runs until SIGTERM or SIGINT: then stops accepting, lets in-flight requests finish within the grace period, and stops.</summary>
    public async Task WaitForShutdownAsync() => await _app.WaitForShutdownAsync();

    /// <summary>Stops the server (in-flight requests finish within the grace period), then the engines.</summary>
    public async ValueTask DisposeAsync()
    {
        using (var cts = new CancellationTokenSource(_options.ResolvedShutdownGrace)) await _app.StopAsync(cts.Token);
        await _app.DisposeAsync();
        _state.Dispose();
    }
}

/// <summary>What the endpoints share: the detector once loaded, its scheduler, the options, metrics and the request log.</summary>
internal sealed class ServingState(ServeOptions options, ServeMetrics metrics, ILogger log) : IDisposable
{
    public ServeOptions Options { get; } = options;
    public ServeMetrics Metrics { get; } = metrics;
    public ILogger Log { get; } = log;
    public TaskCompletionSource Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public Detector? Detector { get; private set; }
    public BatchScheduler? Scheduler { get; private set; }
    private readonly byte[]? _keyHash = options.ApiKey is null ? null : SHA256.HashData(Encoding.UTF8.GetBytes(options.ApiKey));

    /// <summary>Takes the loaded detector, scores one warm-up image per category on every engine, then reports ready.</summary>
    public void Start(Detector detector)
    {
        Detector = detector;
        var watch = Stopwatch.StartNew();
        var warm = WarmupImage(detector.AnalysisSize);
        foreach (string category in detector.Categories)
            for (int e = 0; e < detector.EngineCount; e++)
            {
                // A category that cannot score is named here and answered 500 with the engine's message; the others serve.
                try { detector.Detect(category, [warm], engine: e); }
                catch (Exception ex) when (AnomalySD.Engine.Failures.IsExpected(ex)) { Log.LogError("category {Category} failed its warm-up on engine {Engine}: {Message}", category, e, ex.Message); }
            }
        Scheduler = new BatchScheduler(detector, Options, Metrics);
        Metrics.TrackQueue(() => Scheduler?.Waiting ?? 0);
        Log.LogInformation("ready: {Categories} categories warmed up on {Engines} engine(s) in {Ms:F0} ms (checkpoint {Checkpoint}, version {Version})",
            detector.Categories.Count, detector.EngineCount, watch.Elapsed.TotalMilliseconds, detector.Source, detector.Version ?? "-");
        Ready.TrySetResult();
    }

    /// <summary>A mid-grey image with a soft gradient: exercises every kernel without depending on data.</summary>
    private static RgbImage WarmupImage(int size)
    {
        var data = new float[3 * size * size];
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < size * size; i++) data[c * size * size + i] = 0.4f + 0.2f * (i % size) / size;
        return new RgbImage(size, size, data);
    }

    /// <summary>Whether the request carries the API key (always true without one), compared in constant time.</summary>
    public bool Authorized(HttpRequest request)
    {
        if (_keyHash is null) return true;
        string? given = request.Headers.Authorization.ToString() is { } auth && auth.StartsWith("Bearer ", StringComparison.Ordinal) ? auth[7..]
            : request.Headers["X-API-Key"].ToString();
        if (string.IsNullOrEmpty(given)) return false;
        return CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), _keyHash);
    }

    public void Dispose()
    {
        Scheduler?.Dispose();
        Detector?.Dispose();
    }
}
