using System.Diagnostics;
using AnomalySD.Data;
using AnomalySD.Detection;

namespace AnomalySD.Serving;

/// <summary>One decoded image waiting to be scored, and where its result goes.</summary>
internal sealed class WorkItem(string category, RgbImage image, double? threshold, CancellationToken cancellation)
{
    public string Category { get; } = category;
    public RgbImage Image { get; } = image;
    public double? Threshold { get; } = threshold;
    public CancellationToken Cancellation { get; } = cancellation;
    public long EnqueuedAt { get; } = Stopwatch.GetTimestamp();
    public TaskCompletionSource<ScoredItem> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>A scored image: its result, the time it waited for its batch, the batch's scoring time and the batch's size.</summary>
internal sealed record ScoredItem(DetectionResult Result, double QueueMs, double ScoreMs, int BatchSize);

/// <summary>
/// Dynamic batching (as Triton's dynamic batcher): one queue and one worker thread per engine of the <see cref="Detector"/>. A worker
/// takes the oldest waiting image, then gathers waiting images of the same category (a batch is one native call for one category)
/// until it holds <see cref="ServeOptions.MaxBatch"/> or <see cref="ServeOptions.MaxDelay"/> has passed since the oldest arrived,
/// and scores them in one engine call. Images go to the engine with the fewest waiting; at most <see cref="ServeOptions.MaxQueue"/>
/// wait in all, so a burst is answered 503 instead of growing memory and latency without bound.
/// </summary>
internal sealed class BatchScheduler : IDisposable
{
    private readonly EngineWorker[] _workers;
    private readonly int _maxQueue;
    private int _waiting;

    public BatchScheduler(Detector detector, ServeOptions options, ServeMetrics metrics)
    {
        _maxQueue = options.MaxQueue;
        _workers = Enumerable.Range(0, detector.EngineCount).Select(e => new EngineWorker(detector, e, options, metrics, this)).ToArray();
    }

    /// <summary>Images waiting for an engine, over all engines.</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Queues <paramref name="items"/> together (all or none); false when the queue is full.</summary>
    public bool TryEnqueue(IReadOnlyList<WorkItem> items)
    {
        if (Interlocked.Add(ref _waiting, items.Count) > _maxQueue)
        {
            Interlocked.Add(ref _waiting, -items.Count);
            return false;
        }
        foreach (var item in items) _workers.MinBy(w => w.Depth)!.Add(item);
        return true;
    }

    internal void Taken(int count) => Interlocked.Add(ref _waiting, -count);

    /// <summary>Scores what is still queued, then stops the workers.</summary>
    public void Dispose()
    {
        foreach (var w in _workers) w.Stop();
    }
}

/// <summary>The thread that owns one engine: engines are not thread-safe, so only this thread calls it.</summary>
internal sealed class EngineWorker
{
    private readonly Detector _detector;
    private readonly int _engine;
    private readonly ServeOptions _options;
    private readonly ServeMetrics _metrics;
    private readonly BatchScheduler _owner;
    private readonly LinkedList<WorkItem> _queue = new();
    private readonly Thread _thread;
    private bool _stopping;

    public EngineWorker(Detector detector, int engine, ServeOptions options, ServeMetrics metrics, BatchScheduler owner)
    {
        (_detector, _engine, _options, _metrics, _owner) = (detector, engine, options, metrics, owner);
        _thread = new Thread(Run) { IsBackground = true, Name = $"anomalysd engine {engine}" };
        _thread.Start();
    }

    public int Depth
    {
        get { lock (_queue) return _queue.Count; }
    }

    public void Add(WorkItem item)
    {
        lock (_queue)
        {
            _queue.AddLast(item);
            Monitor.PulseAll(_queue);
        }
    }

    public void Stop()
    {
        lock (_queue)
        {
            _stopping = true;
            Monitor.PulseAll(_queue);
        }
        _thread.Join();
    }

    private void Run()
    {
        while (NextBatch() is { } batch)
        {
            _owner.Taken(batch.Count);
            var live = batch.Where(i => !i.Cancellation.IsCancellationRequested).ToList();
            foreach (var cancelled in batch.Except(live)) cancelled.Result.TrySetCanceled(cancelled.Cancellation);
            if (live.Count == 0) continue;
            long start = Stopwatch.GetTimestamp();
            try
            {
                var results = _detector.Detect(live[0].Category, live.Select(i => i.Image).ToList(), live.Select(i => i.Threshold).ToList(), engine: _engine);
                double scoreMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                _metrics.Batch(live[0].Category, live.Count);
                for (int k = 0; k < live.Count; k++)
                    live[k].Result.TrySetResult(new ScoredItem(results[k], Stopwatch.GetElapsedTime(live[k].EnqueuedAt, start).TotalMilliseconds, scoreMs, live.Count));
            }
            catch (Exception e)
            {
                foreach (var item in live) item.Result.TrySetException(e);
            }
        }
    }

    /// <summary>The next batch: the oldest image and the waiting images of its category, up to the batch size or the delay; null
    /// once stopping with nothing queued.</summary>
    private List<WorkItem>? NextBatch()
    {
        lock (_queue)
        {
            while (_queue.Count == 0)
            {
                if (_stopping) return null;
                Monitor.Wait(_queue);
            }
            var first = _queue.First!.Value;
            _queue.RemoveFirst();
            var batch = new List<WorkItem> { first };
            long deadline = first.EnqueuedAt + (long)(_options.ResolvedMaxDelay.TotalSeconds * Stopwatch.Frequency);
            while (batch.Count < _options.MaxBatch)
            {
                for (var node = _queue.First; node is not null && batch.Count < _options.MaxBatch;)
                {
                    var next = node.Next;
                    if (node.Value.Category == first.Category && SameSize(node.Value.Image, first.Image))
                    {
                        batch.Add(node.Value);
                        _queue.Remove(node);
                    }
                    node = next;
                }
                long left = deadline - Stopwatch.GetTimestamp();
                if (batch.Count >= _options.MaxBatch || left <= 0 || _stopping) break;
                Monitor.Wait(_queue, TimeSpan.FromSeconds(left / (double)Stopwatch.Frequency));
            }
            return batch;
        }
    }

    private static bool SameSize(RgbImage a, RgbImage b) => a.Width == b.Width && a.Height == b.Height;
}
