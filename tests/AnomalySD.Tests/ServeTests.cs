using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using AnomalySD.Detection;
using AnomalySD.Engine;
using AnomalySD.Serving;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;
using Xunit.Abstractions;

namespace AnomalySD.Tests;

/// <summary>
/// <c>anomalysd serve</c> on a real Kestrel, on a loopback port (port 0, read back), driven with HttpClient: readiness, scores equal
/// to detect's at any batch size, batching under concurrency, every error status followed by a request that succeeds, a full queue,
/// the OpenAPI description, and (as a real process) SIGTERM draining and memory over 2,000 requests.
/// </summary>
[Collection(NativeCollection.Name)]
public sealed class ServeTests(FastCheckpointFixture fixture, ITestOutputHelper output) : IClassFixture<FastCheckpointFixture>
{
    private static readonly ScoringRequest Prototype = new(MaskStrategy.Prototype);

    /// <summary>A slow scoring (inpainting 2 masks for 10 steps): requests stay in flight long enough to fill a queue or meet a SIGTERM.</summary>
    private static readonly ScoringRequest Slow = new(MaskStrategy.Full, Scales: [1], NumInferenceSteps: 10, NoiseStrength: 1.0);

    private Func<Detector> Load(ScoringRequest request, string? checkpoint = null) =>
        () => Detector.Open(checkpoint ?? fixture.Checkpoint, new DetectorSettings(["cpu"], new ScoringBackbones(), request), NullLogger.Instance);

    private static async Task<(DetectionServer Server, HttpClient Client)> Start(ServeOptions options, Func<Detector> load, Task? gate = null)
    {
        var server = await DetectionServer.StartAsync(options with { Port = 0 }, load, NullLoggerFactory.Instance, gate);
        var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}"), Timeout = TimeSpan.FromMinutes(5) };
        return (server, client);
    }

    private string[] TestImages => Directory.EnumerateFiles(Path.Combine(fixture.Data, "washer", "test"), "*.png", SearchOption.AllDirectories)
                                            .Order(StringComparer.Ordinal).ToArray();

    private static ByteArrayContent Png(byte[] bytes, string type = "image/png")
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue(type);
        return content;
    }

    private static async Task<JsonNode> Json(HttpResponseMessage response) => JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    private static async Task<HttpResponseMessage> Post(HttpClient client, string category, HttpContent content, string query = "") =>
        await client.PostAsync($"/v1/categories/{category}/detect{query}", content);

    [Fact]
    public async Task TheServerIsReadyOnlyAfterWarmUp()
    {
        var gate = new TaskCompletionSource();
        var (server, client) = await Start(new ServeOptions(), Load(Prototype), gate.Task);
        await using (server)
        using (client)
        {
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v2/health/live")).StatusCode);
            var ready = await client.GetAsync("/v2/health/ready");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.False((await Json(ready))["ready"]!.GetValue<bool>());
            var early = await Post(client, "washer", Png(File.ReadAllBytes(TestImages[0])));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, early.StatusCode);
            Assert.Equal("1", early.Headers.RetryAfter?.ToString());
            gate.SetResult();
            await server.Ready;
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v2/health/ready")).StatusCode);
            var categories = await Json(await client.GetAsync("/v1/categories"));
            var washer = categories["categories"]!.AsArray().Single()!;
            Assert.Equal("washer", washer["name"]!.GetValue<string>());
            Assert.Equal("Prototype", washer["masks"]!.GetValue<string>());
            Assert.Equal(64, washer["analysis_size"]!.GetValue<int>());
            Assert.Equal(categories["fingerprint"]!.GetValue<string>(), washer["checkpoint_fingerprint"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task ServedScoresEqualDetectsAtEveryBatchSizeAndBatchingHappens()
    {
        // detect's scores: one image per engine call, as DetectCommand scores them.
        var images = TestImages;
        double[] expected;
        using (var detector = Load(Prototype)())
            expected = images.Select(f => detector.Detect("washer", [detector.Decode(f)])[0].RawScore).ToArray();
        var (stdout, _) = (InProcessCli.Run(["detect", "--checkpoint", fixture.Checkpoint, "--category", "washer", "--masks", "Prototype", .. images]).Stdout, 0);
        var printed = stdout.Split('\n').Skip(1).Where(l => l.Contains('\t')).Select(l => double.Parse(l.Split('\t')[1], CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(images.Length, printed.Length);
        for (int i = 0; i < images.Length; i++) Assert.Equal(expected[i], printed[i], 5e-6 * Math.Max(1, Math.Abs(expected[i])));

        double before = BatchCount(await MetricsText(null)), imagesBefore = ImagesScored(await MetricsText(null));
        foreach (int maxBatch in new[] { 1, 4, 8 })
        {
            var (server, client) = await Start(new ServeOptions(MaxBatch: maxBatch, MaxDelay: TimeSpan.FromMilliseconds(300)), Load(Prototype));
            await using (server)
            using (client)
            {
                await server.Ready;
                // Every image at once: with batching on, they share engine calls.
                var responses = await Task.WhenAll(images.Select(f => Post(client, "washer", Png(File.ReadAllBytes(f)))));
                for (int i = 0; i < images.Length; i++)
                {
                    Assert.Equal(HttpStatusCode.OK, responses[i].StatusCode);
                    var r = (await Json(responses[i]))["results"]![0]!;
                    double served = r["score_raw"]!.GetValue<double>();
                    Assert.True(Math.Abs(served - expected[i]) <= 1e-6 * Math.Max(1, Math.Abs(expected[i])), $"batch {maxBatch}, image {i}: served {served:R}, detect {expected[i]:R}");
                    Assert.Null(r["score"]); // an uncalibrated checkpoint: raw scores only
                    foreach (string t in new[] { "queue", "decode", "score", "total" }) Assert.True(r["timings_ms"]![t]!.GetValue<double>() >= 0);
                }
                // A multipart request with every image: the results come back in order.
                var form = new MultipartFormDataContent();
                foreach (var f in images) form.Add(Png(File.ReadAllBytes(f)), "image", Path.GetFileName(f));
                var multi = await Json(await Post(client, "washer", form, "?map=png"));
                var results = multi["results"]!.AsArray();
                Assert.Equal(images.Length, results.Count);
                for (int i = 0; i < images.Length; i++)
                {
                    Assert.True(Math.Abs(results[i]!["score_raw"]!.GetValue<double>() - expected[i]) <= 1e-6 * Math.Max(1, Math.Abs(expected[i])));
                    Assert.StartsWith("iVBORw0KGgo", results[i]!["map_png"]!.GetValue<string>()); // a base64 PNG
                }
                string metrics = await MetricsText(client);
                Assert.Contains("anomalysd_queue_depth", metrics);
                Assert.Matches(new Regex(@"http_request_duration_seconds_bucket\{[^}]*code=""200"""), metrics);
            }
        }
        // Batching observed: fewer engine calls than images over the three servers (the batch-size histogram).
        string after = await MetricsText(null);
        double batches = BatchCount(after) - before, scored = ImagesScored(after) - imagesBefore;
        output.WriteLine($"{scored} images in {batches} engine calls");
        Assert.Equal(3 * 2 * images.Length, scored);
        Assert.True(batches < scored, $"{batches} engine calls for {scored} images: nothing was batched");
    }

    private static async Task<string> MetricsText(HttpClient? client)
    {
        if (client is not null) return await client.GetStringAsync("/metrics");
        using var stream = new MemoryStream();
        await Prometheus.Metrics.DefaultRegistry.CollectAndExportAsTextAsync(stream);
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    private static double MetricValue(string text, string name) =>
        text.Split('\n').Where(l => l.StartsWith(name + " ", StringComparison.Ordinal) || l.StartsWith(name + "{", StringComparison.Ordinal))
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));

    private static double BatchCount(string text) => MetricValue(text, "anomalysd_batch_size_count");
    private static double ImagesScored(string text) => MetricValue(text, "anomalysd_images_scored_total");

    [Fact]
    public async Task EveryBadRequestIsAnsweredAndTheNextIsServed()
    {
        const string key = "s3cret-key";
        var (server, client) = await Start(new ServeOptions(MaxUploadBytes: 1 << 20, ApiKey: key), Load(Prototype));
        await using (server)
        using (client)
        {
            await server.Ready;
            byte[] good = File.ReadAllBytes(TestImages[0]);
            async Task<HttpResponseMessage> Send(HttpContent content, string category = "washer", string query = "", string? auth = key)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/categories/{category}/detect{query}") { Content = content };
                if (auth is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", auth);
                // As curl does for large bodies: the server's 413 comes before the body is sent (a server that refuses a body it
                // has not read closes the connection, and a client still sending would not see the answer).
                request.Headers.ExpectContinue = true;
                return await client.SendAsync(request);
            }
            var cases = new (string Name, Func<Task<HttpResponseMessage>> Request, HttpStatusCode Status, string Says)[]
            {
                ("undecodable", () => Send(Png("not an image"u8.ToArray())), HttpStatusCode.BadRequest, "not a recognised image format"),
                ("truncated", () => Send(Png(good[..(good.Length * 9 / 10)])), HttpStatusCode.BadRequest, "truncated"),
                ("oversized in pixels", () => Send(Png(RobustnessTests.HandMadePng(100_000, 100_000))), HttpStatusCode.BadRequest, "beyond the limits"),
                ("unknown category", () => Send(Png(good), "carpet"), HttpStatusCode.NotFound, "unknown category 'carpet'"),
                ("over the upload limit", () => Send(Png(new byte[2 << 20])), HttpStatusCode.RequestEntityTooLarge, "over the limit"),
                ("another media type", () => Send(new StringContent("hello")), HttpStatusCode.UnsupportedMediaType, "text/plain"),
                ("no key", () => Send(Png(good), auth: null), HttpStatusCode.Unauthorized, "API key"),
                ("wrong key", () => Send(Png(good), auth: "s3cret-kez"), HttpStatusCode.Unauthorized, "API key"),
                ("bad map", () => Send(Png(good), query: "?map=jpg"), HttpStatusCode.BadRequest, "map must be none or png"),
                ("bad threshold", () => Send(Png(good), query: "?threshold=abc"), HttpStatusCode.BadRequest, "threshold must be a number"),
            };
            foreach (var (name, request, status, says) in cases)
            {
                var response = await request();
                string body = await response.Content.ReadAsStringAsync();
                Assert.True(status == response.StatusCode, $"{name}: {response.StatusCode} {body}");
                var error = JsonNode.Parse(body.Length > 0 ? body : $"{{\"missing\": \"{name}: no body\"}}")!;
                Assert.True(error["status"] is not null, $"{name}: {body}");
                Assert.Equal((int)status, error["status"]!.GetValue<int>());
                Assert.Contains(says, error["error"]!.GetValue<string>());
                // The next request is served normally.
                Assert.Equal(HttpStatusCode.OK, (await Send(Png(good))).StatusCode);
            }
            // The probes stay open without the key.
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v2/health/ready")).StatusCode);
        }
    }

    [Fact]
    public async Task AnEngineErrorIsA500AndTheServerKeepsServing()
    {
        // A checkpoint whose metadata names a category that has no prototype bank: the engine refuses to score it.
        string ghost = fixture.EditedCopy("ghost", m =>
        {
            var copy = m["categories"]![0]!.DeepClone();
            copy["name"] = "ghost";
            m["categories"]!.AsArray().Add(copy);
        });
        var (server, client) = await Start(new ServeOptions(), Load(Prototype, ghost));
        await using (server)
        using (client)
        {
            await server.Ready;
            byte[] good = File.ReadAllBytes(TestImages[0]);
            var failed = await Post(client, "ghost", Png(good));
            Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
            Assert.Contains("has no prototype bank", (await Json(failed))["error"]!.GetValue<string>());
            Assert.Equal(HttpStatusCode.OK, (await Post(client, "washer", Png(good))).StatusCode);
        }
    }

    [Fact]
    public async Task AFullQueueAnswers503WithRetryAfter()
    {
        var (server, client) = await Start(new ServeOptions(MaxBatch: 1, MaxQueue: 1), Load(Slow));
        await using (server)
        using (client)
        {
            await server.Ready;
            byte[] good = File.ReadAllBytes(TestImages[0]);
            var responses = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => Post(client, "washer", Png(good))));
            var full = responses.Where(r => r.StatusCode == HttpStatusCode.ServiceUnavailable).ToList();
            output.WriteLine($"{full.Count} of 6 answered 503");
            Assert.NotEmpty(full);
            Assert.Contains(responses, r => r.StatusCode == HttpStatusCode.OK);
            Assert.All(full, r => Assert.Equal("1", r.Headers.RetryAfter?.ToString()));
            Assert.Contains("the queue is full", (await Json(full[0]))["error"]!.GetValue<string>());
            Assert.Equal(HttpStatusCode.OK, (await Post(client, "washer", Png(good))).StatusCode);
        }
    }

    [Fact]
    public async Task TheOpenApiDescriptionListsEveryRoute()
    {
        var (server, client) = await Start(new ServeOptions(), Load(Prototype));
        await using (server)
        using (client)
        {
            var doc = await Json(await client.GetAsync("/openapi/v1.json"));
            var paths = doc["paths"]!.AsObject().Select(kv => kv.Key).Order().ToList();
            Assert.Equal(["/metrics", "/v1/categories", "/v1/categories/{category}/detect", "/v2/health/live", "/v2/health/ready"], paths);
            // The detect body's media types and its answers are described.
            var detect = doc["paths"]!["/v1/categories/{category}/detect"]!["post"]!;
            Assert.Equal(["image/bmp", "image/jpeg", "image/png", "image/tiff", "multipart/form-data"],
                         detect["requestBody"]!["content"]!.AsObject().Select(kv => kv.Key).Order());
            Assert.Equal(["200", "400", "401", "404", "413", "415", "500", "503"], detect["responses"]!.AsObject().Select(kv => kv.Key).Order());
        }
    }

    /// <summary>The server as a real process: (process, port) once it listens.</summary>
    private ProcessRunner StartProcess(out int port, params string[] extra)
    {
        var p = new ProcessRunner(ProcessRunner.Cli, ["serve", "--checkpoint", fixture.Checkpoint, "--port", "0", .. extra]);
        Assert.True(p.WaitFor("listening on http://127.0.0.1:"), p.Stderr);
        port = int.Parse(Regex.Match(p.Stderr, @"listening on http://127\.0\.0\.1:(\d+)").Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(p.WaitFor("ready: "), p.Stderr);
        return p;
    }

    [Fact]
    public async Task SigtermLetsInFlightRequestsFinishAndExitsZero()
    {
        using var process = StartProcess(out int port, "--masks", "Full", "--scales", "1", "--num-inference-steps", "10", "--noise-strength", "1", "--max-batch", "1");
        using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromMinutes(5) };
        byte[] good = File.ReadAllBytes(TestImages[0]);
        var inFlight = Enumerable.Range(0, 3).Select(_ => Post(client, "washer", Png(good))).ToList();
        await Task.Delay(200);
        using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", process.Pid.ToString(CultureInfo.InvariantCulture)])) kill.WaitForExit();
        var responses = await Task.WhenAll(inFlight);
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(0, process.Wait(60));
        Assert.Contains("stopping: in-flight requests finish", process.Stderr);
    }

    [Fact]
    public async Task MemoryStaysFlatOverTwoThousandRequests()
    {
        using var process = StartProcess(out int port, "--masks", "Prototype");
        using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
        var bodies = TestImages.Select(File.ReadAllBytes).ToArray();
        long rssAt100 = 0;
        int sent = 0;
        async Task Worker()
        {
            while (true)
            {
                int i = Interlocked.Increment(ref sent);
                if (i > 2000) return;
                var response = await Post(client, "washer", Png(bodies[i % bodies.Length]));
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                if (i == 100) rssAt100 = Rss(process.Pid);
            }
        }
        await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(Worker)));
        long rssAt2000 = Rss(process.Pid);
        output.WriteLine($"RSS after 100 requests: {rssAt100 / 1048576.0:F1} MB; after 2,000: {rssAt2000 / 1048576.0:F1} MB");
        Assert.True(rssAt2000 - rssAt100 < 64L << 20, $"RSS grew from {rssAt100 >> 20} MB to {rssAt2000 >> 20} MB");
    }

    private static long Rss(int pid)
    {
        string line = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(Regex.Match(line, @"\d+").Value, CultureInfo.InvariantCulture) * 1024;
    }
}
