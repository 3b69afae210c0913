using System.Diagnostics;
using AnomalySD.Calibration;
using AnomalySD.Checkpoints;
using AnomalySD.Data;
using AnomalySD.Detection;
using AnomalySD.Engine;
using AnomalySD.Metrics;
using AnomalySD.Scoring;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Evaluation;

/// <summary>
/// Scores every test image of each category and computes image AUROC / AP / F1-max, pixel AUROC / F1-max and PRO
/// (FPR limit 0.3). Images are scored at the analysis resolution (<c>meta.AnalysisSize</c>); maps and ground truth are
/// compared at the evaluation resolution (0 = each image's original size): the smoothed map is resized bilinearly, the
/// mask is resized with nearest neighbour from its original file. Unreadable images and masks of the wrong size are
/// reported with their path, skipped and counted; the shots used for fitting are excluded from the test split. With
/// several engines (one model per device), images are scored in parallel from one queue and accumulated in index order. With
/// transductive scoring (<see cref="DetectorOptions.Transductive"/>) each category's split is one set, scored on the first engine.
/// </summary>
public static class Evaluator
{
    /// <summary>The test samples of a category that an evaluation scores, in index order: shots excluded, then subsampled.</summary>
    public static List<Sample> TestSamples(CheckpointMetadata meta, IDataset dataset, string category, int? maxImagesPerCategory)
    {
        var shots = new HashSet<string>(meta.ShotPaths.GetValueOrDefault(category) ?? [], StringComparer.Ordinal);
        var tests = dataset.Test(category).Where(s => !shots.Contains(Path.GetFullPath(s.ImagePath))).ToList();
        return maxImagesPerCategory is int cap ? Subsample(tests, cap) : tests;
    }

    public static EvaluationResult Run(Detector detector, IDataset dataset, IReadOnlyList<string> categories, ILogger log, Action<string, int, int>? progress,
                                       EvaluationOptions eo)
    {
        var total = Stopwatch.StartNew();
        var meta = detector.Metadata;
        int eval = eo.EvalSize ?? detector.Setup.EvalSize;
        bool whole = eo.Include is null; // a shard skips the restoration check and the pictures' inpaintings
        var results = new List<CategoryMetrics>();
        var skipped = new List<string>();
        var scored = new Dictionary<string, IReadOnlyList<ScoredSample>>();
        var cases = new Dictionary<string, IReadOnlyList<ReportCase>>();
        var restoration = new Dictionary<string, RestorationResult>();
        var decisions = new Dictionary<string, DecisionMetrics>();
        if (detector.Setup.Detector.Transductive.Enabled)
        {
            // Refused before any work: a shard sees part of the split only, and the fused map needs E-only categories.
            if (eo.Include is not null) throw new ArgumentException("transductive scoring compares each test image with the rest of its split, which a shard does not see: run it unsharded");
            foreach (string category in categories)
                if (ScoringRules.TransductiveProblem(detector.Setup.Detector, category) is string problem) throw new ArgumentException(problem);
        }
        foreach (string category in categories)
        {
            var prompts = detector.Category(category);
            var all = TestSamples(meta, dataset, category, eo.MaxImagesPerCategory);
            var work = Enumerable.Range(0, all.Count).Where(i => eo.Include?.Invoke(all[i]) ?? true).ToList();
            var watch = Stopwatch.StartNew();
            var accumulator = new CategoryAccumulator(category, detector.PostProcessor(category));
            var normalsForRestoration = new List<RgbImage>();
            int skippedHere = 0, done = 0;
            var outcomes = detector.Setup.Detector.Transductive.Enabled
                ? ScoreTransductive(detector, all, work, category, eval, log, progress)
                : ScoreInOrder(detector.EngineCount, work, (engine, i) => ScoreOne(detector, engine, all[i], category, i, eval, log, restored: whole));
            foreach (var (index, outcome) in outcomes)
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
                if (!record.Sample.IsAnomalous && normalsForRestoration.Count < 4 && whole && outcome.Image is not null) normalsForRestoration.Add(outcome.Image);
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
            if (detector.Setup.Detector.Masks != MaskStrategy.Prototype && normalsForRestoration.Count > 0)
            {
                // Section 4 premise: the model restores normal appearance. Held-out normal test images, 4 random
                // rectangles each, masked-region MSE of the inpainting vs a masked Gaussian-blur fill.
                var inpaint = (detector.Setup.Detector.Inpaint ?? new InpaintOptions()) with { NoiseStrength = prompts.NoiseStrength };
                var r = Restoration.Check(detector.Engine(0), category, normalsForRestoration, 4, inpaint, seed: 17);
                restoration[category] = r;
                log.LogInformation("{Category}: restoration of {Masks} masked regions: inpainting MSE {A:F5}, blur-fill MSE {B:F5}", category, r.Masks, r.InpaintMse, r.BlurFillMse);
            }
        }
        return Summarize(results, skipped, scored, total.Elapsed.TotalSeconds, cases, restoration, decisions, detector.Metadata.Calibration);
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
            var accumulator = new CategoryAccumulator(category, new PostProcessor(calibration.GetValueOrDefault(category)));
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

    /// <summary>An image decoded at the analysis size, its original size and its ground truth at the evaluation size.</summary>
    private sealed record Loaded(RgbImage Image, int Width, int Height, BinaryMask? Truth);

    /// <summary>Loads one test image and its ground truth; null with the message of an unreadable file.</summary>
    private static (Loaded? Loaded, string? Skip) Load(Detector detector, Sample sample, int eval, ILogger log)
    {
        try
        {
            var (w, h) = ImageIO.Identify(sample.ImagePath);
            var image = detector.Decode(sample.ImagePath);
            BinaryMask? gt = null;
            if (sample.MaskPath is not null)
            {
                gt = ImageIO.LoadMask(sample.MaskPath, eval, w, h);
                if (sample.IsAnomalous && gt.Count == 0)
                    log.LogWarning("{Path}: the ground-truth mask of this anomalous image marks no pixel (at the evaluation size); pixel metrics treat it as all-normal", sample.MaskPath);
            }
            else if (sample.IsAnomalous) log.LogWarning("{Path}: anomalous image without a ground-truth mask; pixel metrics treat it as all-normal", sample.ImagePath);
            return (new Loaded(image, w, h, gt), null);
        }
        catch (ImageLoadException e)
        {
            return (null, e.Message);
        }
    }

    /// <summary>The record of one scored image: its map resized to the evaluation size.</summary>
    private static Outcome Record(DetectionResult result, Loaded loaded, Sample sample, string category, int index, int eval)
    {
        int eh = eval > 0 ? eval : loaded.Height, ew = eval > 0 ? eval : loaded.Width;
        var evalMap = result.Map.Height == eh && result.Map.Width == ew ? result.Map : Map2D.ResizeBilinear(result.Map, eh, ew);
        var record = new ImageRecord(category, index, sample, result.RawScore, result.Score, Array.ConvertAll(evalMap.Data, v => (float)v),
                                     loaded.Truth?.Data ?? new byte[eh * ew], eh, ew, result.Restored);
        return new Outcome(record, null, loaded.Image);
    }

    /// <summary>One image: loaded at the analysis size (its ground truth at the evaluation size), scored, its map resized.</summary>
    private static Outcome ScoreOne(Detector detector, int engine, Sample sample, string category, int index, int eval, ILogger log, bool restored)
    {
        var (loaded, skip) = Load(detector, sample, eval, log);
        if (loaded is null) return new Outcome(null, skip, null);
        return Record(detector.Detect(category, [loaded.Image], restored, engine: engine)[0], loaded, sample, category, index, eval);
    }

    /// <summary>
    /// The images of <paramref name="work"/> scored as one transductive set (<see cref="Detector.DetectTransductive"/>) on engine 0: all
    /// decoded first (unreadable ones skipped and reported), then their features, the mutual maps and the usual smoothing; outcomes in
    /// index order. The decoded split and its features are held in memory at once (about 2.3 MB per 256 x 256 image).
    /// </summary>
    private static IEnumerable<(int Index, Outcome Outcome)> ScoreTransductive(Detector detector, IReadOnlyList<Sample> all, IReadOnlyList<int> work,
                                                                               string category, int eval, ILogger log, Action<string, int, int>? progress)
    {
        var loaded = new List<(int Index, Loaded Loaded)>();
        var outcomes = new Dictionary<int, Outcome>();
        foreach (int i in work)
        {
            var (l, skip) = Load(detector, all[i], eval, log);
            if (l is null) outcomes[i] = new Outcome(null, skip, null);
            else loaded.Add((i, l));
            progress?.Invoke($"decode {category}", loaded.Count + outcomes.Count, work.Count);
        }
        if (loaded.Count > 0)
        {
            var results = detector.DetectTransductive(category, loaded.Select(l => l.Loaded.Image).ToList());
            for (int k = 0; k < loaded.Count; k++)
                outcomes[loaded[k].Index] = Record(results[k], loaded[k].Loaded, all[loaded[k].Index], category, loaded[k].Index, eval);
        }
        foreach (int i in work) yield return (i, outcomes[i]);
    }

    /// <summary>
    /// Scores <paramref name="work"/> (image indices) and yields the outcomes in that order. With several engines, one worker
    /// thread per engine pulls indices from one queue (each engine is used by its own thread only, as the C ABI asks); the
    /// first failure stops the workers and is rethrown here.
    /// </summary>
    private static IEnumerable<(int Index, Outcome Outcome)> ScoreInOrder(int engines, IReadOnlyList<int> work, Func<int, int, Outcome> score)
    {
        if (engines == 1)
        {
            foreach (int i in work) yield return (i, score(0, i));
            yield break;
        }
        var results = new System.Collections.Concurrent.ConcurrentDictionary<int, Outcome>();
        var queue = new System.Collections.Concurrent.ConcurrentQueue<int>(work);
        using var ready = new SemaphoreSlim(0);
        Exception? failure = null;
        int stop = 0;  // set when the consumer stops early (its own exception, or it abandons the enumeration)
        var workers = Enumerable.Range(0, engines).Select(d => Task.Factory.StartNew(() =>
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
