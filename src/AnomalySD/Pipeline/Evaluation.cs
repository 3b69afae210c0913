using System.Diagnostics;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Metrics;
using AnomalySD.Scoring;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Pipeline;

/// <summary>Per-category metrics (and, in <see cref="EvaluationResult.Mean"/>, their mean over categories).
/// Pixel metrics are NaN for a category without anomalous pixels; image metrics are NaN without both classes.</summary>
public sealed record CategoryMetrics(string Category, int Images, int Skipped, double ImageAuroc, double ImageAp, double ImageF1Max,
                                     double PixelAuroc, double PixelF1Max, double Pro, double Seconds);

/// <summary>The score of one test image (for the ROC curve); <paramref name="Normalized"/> on the calibrated scale (null without calibration).</summary>
public sealed record ScoredSample(Sample Sample, double Score, double? Normalized = null);

/// <summary>An image kept for the report's pictures, with its map, ground truth and the inpainting of its highest-scoring mask.</summary>
public sealed record ReportCase(string Label, Sample Sample, double Score, Map2D Map, BinaryMask? GroundTruth, RgbImage Image, RgbImage? Restored = null);

/// <summary>Image-level decisions at the calibrated threshold (normalised score &gt;= 0.5) against the labels.</summary>
public sealed record DecisionMetrics(double Threshold, int TruePositives, int FalsePositives, int FalseNegatives, int TrueNegatives)
{
    public double Precision => TruePositives + FalsePositives == 0 ? double.NaN : TruePositives / (double)(TruePositives + FalsePositives);
    public double Recall => TruePositives + FalseNegatives == 0 ? double.NaN : TruePositives / (double)(TruePositives + FalseNegatives);
    public double F1 => 2.0 * TruePositives / Math.Max(1, 2 * TruePositives + FalsePositives + FalseNegatives);
}

/// <param name="Scored">Every test image's score, per category.</param>
/// <param name="Cases">Per category: the best-detected and worst-missed anomalous image and the worst false alarm
/// (only these keep their image and map in memory, so memory does not grow with the test set).</param>
public sealed record EvaluationResult(IReadOnlyList<CategoryMetrics> Categories, CategoryMetrics Mean, IReadOnlyList<string> Skipped,
                                      IReadOnlyDictionary<string, IReadOnlyList<ScoredSample>> Scored, double Seconds,
                                      IReadOnlyDictionary<string, IReadOnlyList<ReportCase>> Cases,
                                      IReadOnlyDictionary<string, RestorationResult>? Restoration = null,
                                      IReadOnlyDictionary<string, DecisionMetrics>? Decisions = null,
                                      IReadOnlyDictionary<string, CategoryCalibration>? Calibration = null);

/// <summary>One scored test image at the evaluation resolution: what the metrics, the report and a shard file need.</summary>
/// <param name="Index">Position of the image in its category's test list (after the shots are excluded and any --max-images
/// subsample): metrics are always accumulated in this order, so a merged sharded run computes exactly what one process does.</param>
/// <param name="Map">The smoothed anomaly map at the evaluation resolution, Height x Width, row-major.</param>
/// <param name="Mask">The ground truth at the evaluation resolution (all zero for normal images).</param>
/// <param name="Restored">The inpainting of the highest-scoring mask (analysis resolution); kept in memory only, not in shard files.</param>
public sealed record ImageRecord(string Category, int Index, Sample Sample, double Score, double? Normalized, float[] Map, byte[] Mask, int Height, int Width,
                                 RgbImage? Restored = null);

/// <summary>How <see cref="Evaluation.Run"/> runs.</summary>
/// <param name="MaxImagesPerCategory">Evaluate at most this many test images per category (normal and anomalous both kept).</param>
/// <param name="EvalSize">Evaluation resolution (null = the checkpoint's; 0 = original size).</param>
/// <param name="Shard">Score only this shard's images (<see cref="ShardSpec.Contains"/>); the restoration check is skipped.</param>
/// <param name="OnRecord">Called for every scored image, in index order (a shard writer).</param>
public sealed record EvaluationOptions(int? MaxImagesPerCategory = null, int? EvalSize = null, ShardSpec? Shard = null, Action<ImageRecord>? OnRecord = null);

/// <summary>
/// Metrics of one category, fed one <see cref="ImageRecord"/> at a time in index order: image AUROC / AP / F1-max, pixel
/// AUROC / F1-max, PRO (FPR limit 0.3), the report's cases and the decisions at the calibrated threshold.
/// </summary>
public sealed class CategoryAccumulator(string category, CategoryCalibration? calibration)
{
    private readonly ImageAuroc _imageAuroc = new();
    private readonly AveragePrecision _ap = new();
    private readonly F1Max _f1 = new();
    private readonly PixelAuroc _pixelAuroc = new();
    private readonly PixelF1Max _pixelF1 = new();
    private readonly PixelPro _pro = new(0.3);
    private readonly List<ScoredSample> _scored = [];
    private ImageRecord? _best, _missed, _falseAlarm;

    public string Category { get; } = category;
    public IReadOnlyList<ScoredSample> Scored => _scored;

    public void Add(ImageRecord r)
    {
        int label = r.Sample.IsAnomalous ? 1 : 0;
        _imageAuroc.Update([r.Score], [label]);
        _ap.Update([r.Score], [label]);
        _f1.Update([r.Score], [label]);
        _pixelAuroc.Update(r.Map, r.Mask);
        _pixelF1.Update(r.Map, r.Mask);
        _pro.Update(r.Map, r.Mask, r.Height, r.Width);
        _scored.Add(new ScoredSample(r.Sample, r.Score, r.Normalized));
        // Keep only what the report shows (memory does not grow with the test set); the first of equal scores wins.
        if (r.Sample.IsAnomalous)
        {
            if (_best is null || r.Score > _best.Score) _best = r;
            if (_missed is null || r.Score < _missed.Score) _missed = r;
        }
        else if (_falseAlarm is null || r.Score > _falseAlarm.Score) _falseAlarm = r;
    }

    public CategoryMetrics Metrics(int skipped, double seconds) => new(Category, _scored.Count, skipped, Safe(_imageAuroc.Compute), Safe(_ap.Compute),
        Safe(_f1.Compute), Safe(_pixelAuroc.Compute), Safe(_pixelF1.Compute), Safe(_pro.Compute), seconds);

    /// <summary>Image-level decisions at the calibrated threshold (null without calibration).</summary>
    public DecisionMetrics? Decisions()
    {
        if (calibration is null) return null;
        int tp = _scored.Count(i => i.Sample.IsAnomalous && i.Normalized >= 0.5), fp = _scored.Count(i => !i.Sample.IsAnomalous && i.Normalized >= 0.5);
        int fn = _scored.Count(i => i.Sample.IsAnomalous && i.Normalized < 0.5), tn = _scored.Count(i => !i.Sample.IsAnomalous && i.Normalized < 0.5);
        return new DecisionMetrics(calibration.Normalization.Threshold, tp, fp, fn, tn);
    }

    /// <summary>The best-detected and worst-missed anomalous images and the worst false alarm, with their images at the
    /// evaluation resolution (read again from their files).</summary>
    public IReadOnlyList<ReportCase> Cases()
    {
        var picks = new[] { ("best_detected", _best), ("worst_missed", _missed), ("worst_false_alarm", _falseAlarm) }
            .Where(p => p.Item2 is not null).DistinctBy(p => p.Item2!.Sample.ImagePath).ToList();
        var cases = new List<ReportCase>();
        foreach (var (label, r) in picks)
        {
            RgbImage image;
            try { image = ImageIO.LoadRgb(r!.Sample.ImagePath, 0); }
            catch (ImageLoadException) { continue; }
            if (image.Width != r.Width || image.Height != r.Height) image = ImageIO.Resize(image, r.Width, r.Height);
            var map = new Map2D(r.Height, r.Width, Array.ConvertAll(r.Map, v => (double)v));
            var restored = r.Restored is { } x && (x.Width != r.Width || x.Height != r.Height) ? ImageIO.Resize(x, r.Width, r.Height) : r.Restored;
            cases.Add(new ReportCase(label, r.Sample, r.Score, map, r.Sample.MaskPath is null ? null : new BinaryMask(r.Width, r.Height, r.Mask), image, restored));
        }
        return cases;
    }

    internal static double Safe(Func<double> compute)
    {
        try { return compute(); }
        catch (InvalidOperationException) { return double.NaN; } // one class only: the metric is undefined
    }
}

/// <summary>
/// Scores every test image of each category and computes image AUROC / AP / F1-max, pixel AUROC / F1-max and PRO
/// (FPR limit 0.3). Images are scored at the analysis resolution (<c>meta.AnalysisSize</c>); maps and ground truth are
/// compared at the evaluation resolution (0 = each image's original size): the smoothed map is resized bilinearly, the
/// mask is resized with nearest neighbour from its original file. Unreadable images and masks of the wrong size are
/// reported with their path, skipped and counted; the shots used for fitting are excluded from the test split. With
/// several engines (one model per device), images are scored in parallel from one queue and accumulated in index order.
/// </summary>
public static class Evaluation
{
    public static EvaluationResult Run(InpaintingModel model, CheckpointMetadata meta, IDataset dataset, IReadOnlyList<string> categories,
                                       DetectorOptions options, ILogger log, Action<string, int, int>? progress = null, int? maxImagesPerCategory = null,
                                       int? evalSize = null) =>
        Run([model], meta, dataset, categories, options, log, progress, new EvaluationOptions(maxImagesPerCategory, evalSize));

    /// <summary>The test samples of a category that an evaluation scores, in index order: shots excluded, then subsampled.</summary>
    public static List<Sample> TestSamples(CheckpointMetadata meta, IDataset dataset, string category, int? maxImagesPerCategory)
    {
        var shots = new HashSet<string>(meta.ShotPaths.GetValueOrDefault(category) ?? [], StringComparer.Ordinal);
        var tests = dataset.Test(category).Where(s => !shots.Contains(Path.GetFullPath(s.ImagePath))).ToList();
        return maxImagesPerCategory is int cap ? Subsample(tests, cap) : tests;
    }

    public static EvaluationResult Run(IReadOnlyList<InpaintingModel> engines, CheckpointMetadata meta, IDataset dataset, IReadOnlyList<string> categories,
                                       DetectorOptions options, ILogger log, Action<string, int, int>? progress, EvaluationOptions eo)
    {
        if (engines.Count == 0) throw new ArgumentException("evaluation needs at least one engine");
        var total = Stopwatch.StartNew();
        var detectors = engines.Select(m => new AnomalyDetector(m, options)).ToList();
        int size = meta.AnalysisSize, eval = eo.EvalSize ?? meta.EvalSize;
        var results = new List<CategoryMetrics>();
        var skipped = new List<string>();
        var scored = new Dictionary<string, IReadOnlyList<ScoredSample>>();
        var cases = new Dictionary<string, IReadOnlyList<ReportCase>>();
        var restoration = new Dictionary<string, RestorationResult>();
        var decisions = new Dictionary<string, DecisionMetrics>();
        foreach (string category in categories)
        {
            var prompts = meta.Categories.FirstOrDefault(c => c.Category == category)
                ?? throw new KeyNotFoundException($"category '{category}' was not fitted in this checkpoint (fitted: {string.Join(", ", meta.Categories.Select(c => c.Category))})");
            var all = TestSamples(meta, dataset, category, eo.MaxImagesPerCategory);
            var work = Enumerable.Range(0, all.Count).Where(i => eo.Shard is not { } s || s.Contains(ShardSpec.RelativePath(dataset.Root, all[i].ImagePath))).ToList();
            var watch = Stopwatch.StartNew();
            var calibration = meta.Calibration.GetValueOrDefault(category);
            var accumulator = new CategoryAccumulator(category, calibration);
            var normalsForRestoration = new List<RgbImage>();
            int skippedHere = 0, done = 0;
            foreach (var (index, outcome) in ScoreInOrder(detectors, work, (d, i) => ScoreOne(d, all[i], category, i, prompts.NoiseStrength, calibration, size, eval, log, restored: eo.Shard is null)))
            {
                progress?.Invoke($"eval {category}", ++done, work.Count);
                if (outcome.Skip is string message)
                {
                    log.LogWarning("skipped: {Message}", message);
                    skipped.Add(message);
                    skippedHere++;
                    continue;
                }
                var record = outcome.Record!;
                accumulator.Add(record);
                eo.OnRecord?.Invoke(record);
                if (!record.Sample.IsAnomalous && normalsForRestoration.Count < 4 && eo.Shard is null && outcome.Image is not null) normalsForRestoration.Add(outcome.Image);
            }
            var m = accumulator.Metrics(skippedHere, watch.Elapsed.TotalSeconds);
            log.LogInformation("{Category}: image AUROC {A:F3}, pixel AUROC {P:F3}, PRO {Pro:F3} ({N} images, {S:F0} s)", category, m.ImageAuroc, m.PixelAuroc, m.Pro, m.Images, m.Seconds);
            results.Add(m);
            scored[category] = accumulator.Scored;
            if (accumulator.Decisions() is { } d)
            {
                decisions[category] = d;
                log.LogInformation("{Category}: at the calibrated threshold: precision {P:F3}, recall {R:F3}, F1 {F:F3}", category, d.Precision, d.Recall, d.F1);
            }
            cases[category] = accumulator.Cases();
            if (options.Masks != MaskStrategy.Prototype && normalsForRestoration.Count > 0)
            {
                // Section 4 premise: the model restores normal appearance. Held-out normal test images, 4 random
                // rectangles each, masked-region MSE of the inpainting vs a masked Gaussian-blur fill.
                var inpaint = (options.Inpaint ?? new InpaintOptions()) with { NoiseStrength = prompts.NoiseStrength };
                var r = Restoration.Check(engines[0], category, normalsForRestoration, 4, inpaint, seed: 17);
                restoration[category] = r;
                log.LogInformation("{Category}: restoration of {Masks} masked regions: inpainting MSE {A:F5}, blur-fill MSE {B:F5}", category, r.Masks, r.InpaintMse, r.BlurFillMse);
            }
        }
        return Summarize(results, skipped, scored, total.Elapsed.TotalSeconds, cases, restoration, decisions, meta.Calibration);
    }

    /// <summary>The result of records already scored (a merge of shards): accumulated per category in index order exactly as
    /// <see cref="Run"/> accumulates them.</summary>
    public static EvaluationResult FromRecords(IReadOnlyList<string> categories, IReadOnlyDictionary<string, IReadOnlyList<ImageRecord>> records,
                                               IReadOnlyDictionary<string, CategoryCalibration> calibration, IReadOnlyDictionary<string, int> skippedPerCategory,
                                               IReadOnlyList<string> skipped, IReadOnlyDictionary<string, double> secondsPerCategory)
    {
        var results = new List<CategoryMetrics>();
        var scored = new Dictionary<string, IReadOnlyList<ScoredSample>>();
        var cases = new Dictionary<string, IReadOnlyList<ReportCase>>();
        var decisions = new Dictionary<string, DecisionMetrics>();
        foreach (string category in categories)
        {
            var accumulator = new CategoryAccumulator(category, calibration.GetValueOrDefault(category));
            foreach (var r in records.GetValueOrDefault(category, []).OrderBy(r => r.Index)) accumulator.Add(r);
            results.Add(accumulator.Metrics(skippedPerCategory.GetValueOrDefault(category), secondsPerCategory.GetValueOrDefault(category)));
            scored[category] = accumulator.Scored;
            if (accumulator.Decisions() is { } d) decisions[category] = d;
            cases[category] = accumulator.Cases();
        }
        return Summarize(results, skipped, scored, secondsPerCategory.Values.Sum(), cases, new Dictionary<string, RestorationResult>(), decisions, calibration);
    }

    private static EvaluationResult Summarize(List<CategoryMetrics> results, IReadOnlyList<string> skipped, Dictionary<string, IReadOnlyList<ScoredSample>> scored,
                                              double seconds, Dictionary<string, IReadOnlyList<ReportCase>> cases, Dictionary<string, RestorationResult> restoration,
                                              Dictionary<string, DecisionMetrics> decisions, IReadOnlyDictionary<string, CategoryCalibration> calibration)
    {
        var mean = new CategoryMetrics("mean", results.Sum(r => r.Images), results.Sum(r => r.Skipped), Mean(results, r => r.ImageAuroc),
            Mean(results, r => r.ImageAp), Mean(results, r => r.ImageF1Max), Mean(results, r => r.PixelAuroc), Mean(results, r => r.PixelF1Max),
            Mean(results, r => r.Pro), results.Sum(r => r.Seconds));
        return new EvaluationResult(results, mean, skipped, scored, seconds, cases, restoration, decisions, calibration);
    }

    private sealed record Outcome(ImageRecord? Record, string? Skip, RgbImage? Image);

    /// <summary>One image: loaded at the analysis size (its ground truth at the evaluation size), scored, its map resized.</summary>
    private static Outcome ScoreOne(AnomalyDetector detector, Sample sample, string category, int index, double lambda, CategoryCalibration? calibration,
                                    int size, int eval, ILogger log, bool restored)
    {
        RgbImage image;
        BinaryMask? gt = null;
        int w, h;
        try
        {
            (w, h) = ImageIO.Identify(sample.ImagePath);
            image = ImageIO.LoadRgb(sample.ImagePath, size);
            if (sample.MaskPath is not null)
            {
                gt = ImageIO.LoadMask(sample.MaskPath, eval, w, h);
                if (sample.IsAnomalous && gt.Count == 0)
                    log.LogWarning("{Path}: the ground-truth mask of this anomalous image marks no pixel (at the evaluation size); pixel metrics treat it as all-normal", sample.MaskPath);
            }
            else if (sample.IsAnomalous) log.LogWarning("{Path}: anomalous image without a ground-truth mask; pixel metrics treat it as all-normal", sample.ImagePath);
        }
        catch (ImageLoadException e)
        {
            return new Outcome(null, e.Message, null);
        }
        var score = detector.Score(category, image, lambda, restored);
        int eh = eval > 0 ? eval : h, ew = eval > 0 ? eval : w;
        var evalMap = score.SmoothedMap.Height == eh && score.SmoothedMap.Width == ew ? score.SmoothedMap : AnomalyDetector.Bilinear(score.SmoothedMap, eh, ew);
        var record = new ImageRecord(category, index, sample, score.Score, calibration?.Normalization.Apply(score.Score), Array.ConvertAll(evalMap.Data, v => (float)v),
                                     gt?.Data ?? new byte[eh * ew], eh, ew, score.Restored);
        return new Outcome(record, null, image);
    }

    /// <summary>
    /// Scores <paramref name="work"/> (image indices) and yields the outcomes in that order. With several engines, one worker
    /// thread per engine pulls indices from one queue (each engine is used by its own thread only, as the C ABI asks); the
    /// first failure stops the workers and is rethrown here.
    /// </summary>
    private static IEnumerable<(int Index, Outcome Outcome)> ScoreInOrder(IReadOnlyList<AnomalyDetector> detectors, IReadOnlyList<int> work,
                                                                          Func<AnomalyDetector, int, Outcome> score)
    {
        if (detectors.Count == 1)
        {
            foreach (int i in work) yield return (i, score(detectors[0], i));
            yield break;
        }
        var results = new System.Collections.Concurrent.ConcurrentDictionary<int, Outcome>();
        var queue = new System.Collections.Concurrent.ConcurrentQueue<int>(work);
        using var ready = new SemaphoreSlim(0);
        Exception? failure = null;
        int stop = 0;  // set when the consumer stops early (its own exception, or it abandons the enumeration)
        var workers = detectors.Select(d => Task.Factory.StartNew(() =>
        {
            while (Volatile.Read(ref failure) is null && Volatile.Read(ref stop) == 0 && queue.TryDequeue(out int i))
            {
                try { results[i] = score(d, i); }
                catch (Exception e) { Interlocked.CompareExchange(ref failure, e, null); }
                ready.Release();
            }
            ready.Release(); // a finished worker wakes the consumer too
        }, TaskCreationOptions.LongRunning)).ToArray();
        try
        {
            foreach (int i in work)
            {
                Outcome? outcome;
                while (!results.TryRemove(i, out outcome))
                {
                    if (Volatile.Read(ref failure) is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e).Throw();
                    ready.Wait();
                }
                yield return (i, outcome);
            }
        }
        finally
        {
            // Workers finish the image in hand and stop before the semaphore they release is disposed.
            Volatile.Write(ref stop, 1);
            Task.WaitAll(workers);
        }
    }

    /// <summary>Every n-th sample so that normal and anomalous images both stay represented.</summary>
    private static List<Sample> Subsample(List<Sample> tests, int cap)
    {
        if (tests.Count <= cap) return tests;
        var normal = tests.Where(s => !s.IsAnomalous).ToList();
        var anomalous = tests.Where(s => s.IsAnomalous).ToList();
        int nNormal = Math.Max(1, cap * normal.Count / tests.Count), nAnomalous = Math.Max(1, cap - nNormal);
        static IEnumerable<Sample> Every(List<Sample> s, int n) => s.Count == 0 ? [] : Enumerable.Range(0, Math.Min(n, s.Count)).Select(i => s[i * s.Count / Math.Min(n, s.Count)]);
        return Every(normal, nNormal).Concat(Every(anomalous, nAnomalous)).ToList();
    }


    private static double Mean(IEnumerable<CategoryMetrics> rows, Func<CategoryMetrics, double> f)
    {
        var v = rows.Select(f).Where(x => !double.IsNaN(x)).ToList();
        return v.Count == 0 ? double.NaN : v.Average();
    }
}
