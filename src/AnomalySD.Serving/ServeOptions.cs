namespace AnomalySD.Serving;

/// <summary>How <see cref="DetectionServer"/> listens, batches and limits.</summary>
/// <param name="Host">Address to bind (default loopback only; "0.0.0.0" or "*" for every interface).</param>
/// <param name="Port">TCP port (0: any free port, read back from <see cref="DetectionServer.Port"/>).</param>
/// <param name="MaxBatch">Most images one engine call scores together (1 = batching off).</param>
/// <param name="MaxDelay">Longest a batch waits, from its first image's arrival, for more images of its category (Triton's
/// <c>max_queue_delay_microseconds</c>).</param>
/// <param name="MaxQueue">Most images waiting for an engine, over all engines; a request that would exceed it is answered 503 with
/// Retry-After.</param>
/// <param name="MaxUploadBytes">Largest request body; a larger one is answered 413 before it is read whole.</param>
/// <param name="ApiKey">When set, /v1 requests must carry it (<c>Authorization: Bearer KEY</c> or <c>X-API-Key: KEY</c>), compared in
/// constant time; the probes, /metrics and /openapi stay open.</param>
/// <param name="RequestTimeout">Longest a request may take; past it, images not yet scored are answered 503.</param>
/// <param name="ShutdownGrace">On SIGTERM or SIGINT: the time in-flight requests get to finish before the process exits.</param>
public sealed record ServeOptions(
    string Host = "127.0.0.1", int Port = 8080, int MaxBatch = 8, TimeSpan? MaxDelay = null, int MaxQueue = 64, long MaxUploadBytes = 32L << 20,
    string? ApiKey = null, TimeSpan? RequestTimeout = null, TimeSpan? ShutdownGrace = null)
{
    public TimeSpan ResolvedMaxDelay => MaxDelay ?? TimeSpan.FromMilliseconds(5);
    public TimeSpan ResolvedRequestTimeout => RequestTimeout ?? TimeSpan.FromSeconds(60);
    public TimeSpan ResolvedShutdownGrace => ShutdownGrace ?? TimeSpan.FromSeconds(30);

    /// <summary>Media types a body (or a multipart part) may have.</summary>
    public static readonly IReadOnlyList<string> ImageTypes = ["image/png", "image/jpeg", "image/bmp", "image/tiff"];

    /// <exception cref="ArgumentException">a value out of range, naming it.</exception>
    public void Validate()
    {
        if (Port is < 0 or > 65535) throw new ArgumentException($"--port must be from 0 to 65535, got {Port}");
        if (MaxBatch is < 1 or > 256) throw new ArgumentException($"--max-batch must be from 1 to 256, got {MaxBatch}");
        if (ResolvedMaxDelay < TimeSpan.Zero || ResolvedMaxDelay > TimeSpan.FromSeconds(10)) throw new ArgumentException($"--max-delay-ms must be from 0 to 10000, got {ResolvedMaxDelay.TotalMilliseconds}");
        if (MaxQueue < 1) throw new ArgumentException($"--max-queue must be >= 1, got {MaxQueue}");
        if (MaxUploadBytes < 1) throw new ArgumentException($"--max-upload-mb must be > 0, got {MaxUploadBytes / 1048576.0}");
        if (ResolvedRequestTimeout <= TimeSpan.Zero) throw new ArgumentException("--request-timeout-s must be > 0");
        if (ApiKey is { Length: 0 }) throw new ArgumentException("the API key is empty");
    }
}
