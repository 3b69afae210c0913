using Prometheus;

namespace AnomalySD.Serving;

/// <summary>
/// The server's own Prometheus metrics (prometheus-net; requests by route and status and their latency histogram come from its
/// HTTP middleware: <c>http_requests_received_total</c>, <c>http_request_duration_seconds</c>):
/// <list type="bullet">
/// <item><c>anomalysd_queue_depth</c>: images waiting for an engine;</item>
/// <item><c>anomalysd_batch_size</c>: images per engine call (histogram);</item>
/// <item><c>anomalysd_images_scored_total{category}</c>: images scored.</item>
/// </list>
/// </summary>
internal sealed class ServeMetrics
{
    private static readonly Gauge QueueDepth = Prometheus.Metrics.CreateGauge("anomalysd_queue_depth", "Images waiting for an engine.");

    private static readonly Histogram BatchSize = Prometheus.Metrics.CreateHistogram("anomalysd_batch_size", "Images scored together in one engine call.",
        new HistogramConfiguration { Buckets = [1, 2, 4, 8, 16, 32, 64, 128, 256] });

    private static readonly Counter Scored = Prometheus.Metrics.CreateCounter("anomalysd_images_scored_total", "Images scored, per category.",
        new CounterConfiguration { LabelNames = ["category"] });

    public void Batch(string category, int size)
    {
        BatchSize.Observe(size);
        Scored.WithLabels(category).Inc(size);
    }

    /// <summary>Reads the queue depth when metrics are scraped.</summary>
    public void TrackQueue(Func<int> depth) => Prometheus.Metrics.DefaultRegistry.AddBeforeCollectCallback(() => QueueDepth.Set(depth()));
}
