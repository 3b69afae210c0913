using System.Diagnostics;
using System.Globalization;
using AnomalySD.Data;
using AnomalySD.Detection;
using AnomalySD.Visualization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Logging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace AnomalySD.Serving;

/// <summary>An error answer: <c>{"error": message, "status": code}</c>.</summary>
public sealed record ErrorResponse(string Error, int Status);

/// <summary>Per-image timings in milliseconds: waiting for a batch, decoding, the batch's scoring, the whole request.</summary>
public sealed record TimingsMs(double Queue, double Decode, double Score, double Total);

/// <summary>One image's answer. <paramref name="Score"/> is normalised (0.5 = the calibrated threshold; null uncalibrated),
/// <paramref name="MapPng"/> the anomaly map as a base64 PNG (with <c>map=png</c>).</summary>
public sealed record ImageResponse(double ScoreRaw, double? Score, bool? IsAnomalous, double? Threshold, string? MapPng, TimingsMs TimingsMs);

/// <summary>The answer of <c>POST /v1/categories/{category}/detect</c>: the results in the order of the images.</summary>
public sealed record DetectResponse(string Category, string? Checkpoint, IReadOnlyList<ImageResponse> Results);

/// <summary>One category of <c>GET /v1/categories</c>: its calibrated raw threshold (null uncalibrated), shots, resolutions and masks.</summary>
public sealed record CategoryInfo(string Name, double? Threshold, bool Calibrated, int Shots, int InpaintSize, int AnalysisSize, string Masks,
                                  string Scoring, string? CheckpointFingerprint);

/// <summary>The answer of <c>GET /v1/categories</c>.</summary>
public sealed record CategoriesResponse(string Checkpoint, string? Version, string? Fingerprint, IReadOnlyList<CategoryInfo> Categories);

/// <summary>A probe's answer.</summary>
public sealed record HealthResponse(bool Live, bool Ready);

/// <summary>The routes of <see cref="DetectionServer"/>.</summary>
internal static class Endpoints
{
    public static void Map(WebApplication app, ServingState state)
    {
        app.MapGet("/v2/health/live", () => Results.Json(new HealthResponse(true, state.Ready.Task.IsCompletedSuccessfully)))
            .WithName("live").Produces<HealthResponse>();
        app.MapGet("/v2/health/ready", () => state.Ready.Task.IsCompletedSuccessfully
                ? Results.Json(new HealthResponse(true, true))
                : Results.Json(new HealthResponse(true, false), statusCode: StatusCodes.Status503ServiceUnavailable))
            .WithName("ready").Produces<HealthResponse>().Produces<HealthResponse>(StatusCodes.Status503ServiceUnavailable);
        app.MapGet("/v1/categories", (HttpContext http) => Categories(http, state))
            .WithName("categories").Produces<CategoriesResponse>().Produces<ErrorResponse>(StatusCodes.Status401Unauthorized)
            .Produces<ErrorResponse>(StatusCodes.Status503ServiceUnavailable);
        app.MapPost("/v1/categories/{category}/detect", (HttpContext http, string category, string? map, string? threshold) =>
                Detect(http, state, category, map, threshold))
            .WithName("detect")
            .Produces<DetectResponse>().Produces<ErrorResponse>(StatusCodes.Status400BadRequest).Produces<ErrorResponse>(StatusCodes.Status401Unauthorized)
            .Produces<ErrorResponse>(StatusCodes.Status404NotFound).Produces<ErrorResponse>(StatusCodes.Status413PayloadTooLarge)
            .Produces<ErrorResponse>(StatusCodes.Status415UnsupportedMediaType).Produces<ErrorResponse>(StatusCodes.Status500InternalServerError)
            .Produces<ErrorResponse>(StatusCodes.Status503ServiceUnavailable).DisableAntiforgery();
    }

    private static IResult Error(int status, string message) => Results.Json(new ErrorResponse(message, status), statusCode: status);

    private static IResult Categories(HttpContext http, ServingState state)
    {
        if (!state.Authorized(http.Request)) return Error(StatusCodes.Status401Unauthorized, "missing or wrong API key");
        if (state.Detector is not { } d || !state.Ready.Task.IsCompletedSuccessfully) return NotReady(http);
        var infos = d.Categories.Select(c =>
        {
            var post = d.PostProcessor(c);
            var cal = post.Calibration;
            string scoring = d.Setup.Detector.Masks == MaskStrategy.Prototype || cal is { Weights.UsesInpainting: false } ? "prototype error map E"
                : cal is { Weights.MultiScale: 0 } ? "E and the prototype-guided mask" : "multi-scale and prototype-guided masks";
            return new CategoryInfo(c, cal?.Normalization.Threshold, cal is not null, d.Metadata.Shots, d.Metadata.ImageSize, d.AnalysisSize,
                                    d.Setup.Detector.Masks.ToString(), scoring, d.Fingerprint);
        }).ToList();
        return Results.Json(new CategoriesResponse(d.Source, d.Version, d.Fingerprint, infos));
    }

    private static IResult NotReady(HttpContext http)
    {
        http.Response.Headers.RetryAfter = "1";
        return Error(StatusCodes.Status503ServiceUnavailable, "not ready: the model is loading or warming up");
    }

    private static async Task<IResult> Detect(HttpContext http, ServingState state, string category, string? map, string? thresholdText)
    {
        var watch = Stopwatch.StartNew();
        int status = 0, images = 0;
        var batches = new List<int>();
        try
        {
            var result = await DetectCore(http, state, category, map, thresholdText, watch, batches, n => images = n);
            status = result.Status;
            return result.Result;
        }
        finally
        {
            state.Log.LogInformation("POST detect {Category}: {Images} image(s), batch size {Batches}, status {Status}, {Ms:F1} ms", category, images,
                batches.Count == 0 ? "-" : string.Join(",", batches), status, watch.Elapsed.TotalMilliseconds);
        }
    }

    private static async Task<(IResult Result, int Status)> DetectCore(HttpContext http, ServingState state, string category, string? map, string? thresholdText,
                                                                       Stopwatch watch, List<int> batches, Action<int> count)
    {
        static (IResult, int) Fail(int status, string message) => (Error(status, message), status);
        if (!state.Authorized(http.Request)) return Fail(StatusCodes.Status401Unauthorized, "missing or wrong API key");
        if (state.Detector is not { } detector || state.Scheduler is not { } scheduler || !state.Ready.Task.IsCompletedSuccessfully)
        {
            http.Response.Headers.RetryAfter = "1";
            return Fail(StatusCodes.Status503ServiceUnavailable, "not ready: the model is loading or warming up");
        }
        if (!detector.Categories.Contains(category))
            return Fail(StatusCodes.Status404NotFound, $"unknown category '{Cut(category)}' (this checkpoint has: {string.Join(", ", detector.Categories)})");
        if (map is not (null or "none" or "png")) return Fail(StatusCodes.Status400BadRequest, $"map must be none or png, got '{Cut(map)}'");
        bool withMap = map == "png";
        double? threshold = null;
        if (thresholdText is not null)
        {
            if (!double.TryParse(thresholdText, NumberStyles.Float, CultureInfo.InvariantCulture, out double t) || !double.IsFinite(t))
                return Fail(StatusCodes.Status400BadRequest, $"threshold must be a number, got '{Cut(thresholdText)}'");
            try { _ = detector.PostProcessor(category, t); }
            catch (ArgumentException e) { return Fail(StatusCodes.Status400BadRequest, e.Message); }
            threshold = t;
        }
        List<(string Name, byte[] Data)> bodies;
        try { bodies = await ReadImages(http.Request, state.Options); }
        catch (BadRequest e) { return Fail(e.Status, e.Message); }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return Fail(StatusCodes.Status413PayloadTooLarge, $"the request body is over the limit of {state.Options.MaxUploadBytes} bytes (--max-upload-mb)");
        }
        count(bodies.Count);
        // Decoded here, on the request's thread, with the decoder's checks and limits: nothing from a request reaches the file system.
        var decoded = new List<(RgbImage Image, double DecodeMs)>();
        foreach (var (name, data) in bodies)
        {
            long t0 = Stopwatch.GetTimestamp();
            try { decoded.Add((detector.Decode(name, data), Stopwatch.GetElapsedTime(t0).TotalMilliseconds)); }
            catch (ImageLoadException e) { return Fail(StatusCodes.Status400BadRequest, e.Message); }
        }
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        timeout.CancelAfter(state.Options.ResolvedRequestTimeout);
        var items = decoded.Select(d => new WorkItem(category, d.Image, threshold, timeout.Token)).ToList();
        if (!scheduler.TryEnqueue(items))
        {
            http.Response.Headers.RetryAfter = "1";
            return Fail(StatusCodes.Status503ServiceUnavailable, $"the queue is full ({state.Options.MaxQueue} images waiting, --max-queue); retry later");
        }
        ScoredItem[] scored;
        try { scored = await Task.WhenAll(items.Select(i => i.Result.Task)).WaitAsync(timeout.Token); }
        catch (OperationCanceledException) when (!http.RequestAborted.IsCancellationRequested)
        {
            http.Response.Headers.RetryAfter = "1";
            return Fail(StatusCodes.Status503ServiceUnavailable, $"not scored within the request timeout of {state.Options.ResolvedRequestTimeout.TotalSeconds:F0} s");
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return Fail(StatusCodes.Status500InternalServerError, $"the engine failed: {e.Message.Split('\n')[0]}");
        }
        batches.AddRange(scored.Select(s => s.BatchSize));
        double total = watch.Elapsed.TotalMilliseconds;
        var results = scored.Select((s, k) => new ImageResponse(s.Result.RawScore, s.Result.Score, s.Result.IsAnomalous, s.Result.Threshold,
            withMap ? Convert.ToBase64String(MapPng(s.Result.DisplayMap)) : null, new TimingsMs(s.QueueMs, decoded[k].DecodeMs, s.ScoreMs, total))).ToList();
        return (Results.Json(new DetectResponse(category, detector.Fingerprint, results)), StatusCodes.Status200OK);
    }

    /// <summary>The images of a request: the raw body (an image media type), or the "image" parts of a multipart form.</summary>
    private static async Task<List<(string Name, byte[] Data)>> ReadImages(HttpRequest request, ServeOptions options)
    {
        if (request.ContentLength > options.MaxUploadBytes)
            throw new BadRequest($"the request body ({request.ContentLength} bytes) is over the limit of {options.MaxUploadBytes} bytes (--max-upload-mb)", StatusCodes.Status413PayloadTooLarge);
        string type = (request.ContentType ?? "").Split(';')[0].Trim().ToLowerInvariant();
        if (type == "multipart/form-data")
        {
            var form = await request.ReadFormAsync(new Microsoft.AspNetCore.Http.Features.FormOptions { MultipartBodyLengthLimit = options.MaxUploadBytes });
            var parts = form.Files.Where(f => f.Name == "image").ToList();
            if (parts.Count == 0) throw new BadRequest("the multipart body has no part named \"image\"", StatusCodes.Status400BadRequest);
            var list = new List<(string, byte[])>();
            foreach (var part in parts)
            {
                string partType = (part.ContentType ?? "").Split(';')[0].Trim().ToLowerInvariant();
                if (!ServeOptions.ImageTypes.Contains(partType))
                    throw new BadRequest($"part '{Cut(part.FileName)}' is {Cut(partType)}; send {string.Join(", ", ServeOptions.ImageTypes)}", StatusCodes.Status415UnsupportedMediaType);
                using var buffer = new MemoryStream();
                await part.CopyToAsync(buffer);
                list.Add(($"part '{Cut(part.FileName)}'", buffer.ToArray()));
            }
            return list;
        }
        if (!ServeOptions.ImageTypes.Contains(type))
            throw new BadRequest($"the body is {(type.Length == 0 ? "of no media type" : Cut(type))}; send {string.Join(", ", ServeOptions.ImageTypes)} or multipart/form-data", StatusCodes.Status415UnsupportedMediaType);
        using var body = new MemoryStream();
        await request.Body.CopyToAsync(body);
        if (body.Length == 0) throw new BadRequest("the body is empty", StatusCodes.Status400BadRequest);
        return [("the request body", body.ToArray())];
    }

    /// <summary>The display map as a PNG (the report's colormap).</summary>
    private static byte[] MapPng(AnomalySD.Scoring.Map2D map)
    {
        using var image = new Image<Rgb24>(map.Width, map.Height);
        for (int y = 0; y < map.Height; y++)
            for (int x = 0; x < map.Width; x++) image[x, y] = Visuals.Colormap(map[y, x]);
        using var png = new MemoryStream();
        image.SaveAsPng(png);
        return png.ToArray();
    }

    private static string Cut(string s) => AnomalySD.IO.JsonInput.Cut(s);

    /// <summary>A request that is answered with <see cref="Status"/> and the message.</summary>
    private sealed class BadRequest(string message, int status = StatusCodes.Status400BadRequest) : Exception(message)
    {
        public int Status { get; } = status;
    }
}
