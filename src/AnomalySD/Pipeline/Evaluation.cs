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

/// <summary>
/// Scores every test image of each category and computes image AUROC / AP / F1-max, pixel AUROC / F1-max and PRO
/// (FPR limit 0.3). Images are scored at the analysis resolution (<c>meta.AnalysisSize</c>); maps and ground truth are
/// compared at the evaluation resolution <paramref name="evalSize"/> (0 = each image's original size): the smoothed map
/// is resized bilinearly, the mask is resized with nearest neighbour from its original file. Unreadable images and
/// masks of the wrong size are reported with their path, skipped and counted; the shots used for fitting are excluded
/// from the test split.
/// </summary>
public static class Evaluation
{
    public static EvaluationResult Run(InpaintingModel model, CheckpointMetadata meta, IDataset dataset, IReadOnlyList<string> categories,
                                       DetectorOptions options, ILogger log, Action<string, int, int>? progress = null, int? maxImagesPerCategory = null,
                                       int? evalSize = null)
    {
        var total = Stopwatch.StartNew();
        var detector = new AnomalyDetector(model, options);
        int size = meta.AnalysisSize, eval = evalSize ?? meta.EvalSize;
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
            var shots = new HashSet<string>(meta.ShotPaths.GetValueOrDefault(category) ?? [], StringComparer.Ordinal);
            var tests = dataset.Test(category).Where(s => !shots.Contains(Path.GetFullPath(s.ImagePath))).ToList();
            if (maxImagesPerCategory is int cap) tests = Subsample(tests, cap);
            var watch = Stopwatch.StartNew();
            var images = new List<ScoredSample>();
            ReportCase? best = null, missed = null, falseAlarm = null;
            var normalsForRestoration = new List<RgbImage>();
            var imageAuroc = new ImageAuroc();
            var ap = new AveragePrecision();
            var f1 = new F1Max();
            var pixelAuroc = new PixelAuroc();
            var pixelF1 = new PixelF1Max();
            var pro = new PixelPro(0.3);
            int skippedHere = 0, done = 0;
            foreach (var sample in tests)
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
                    log.LogWarning("skipped: {Message}", e.Message);
                    skipped.Add(e.Message);
                    skippedHere++;
                    continue;
                }
                var score = detector.Score(category, image, prompts.NoiseStrength, restored: true);
                var normalization = meta.Calibration.GetValueOrDefault(category)?.Normalization;
                images.Add(new ScoredSample(sample, score.Score, normalization?.Apply(score.Score)));
                // Report cases show the analysis-resolution map with the ground truth at that resolution.
                BinaryMask? CaseMask() => sample.MaskPath is null ? null : ImageIO.LoadMask(sample.MaskPath, size, w, h);
                if (sample.IsAnomalous)
                {
                    if (best is null || score.Score > best.Score) best = new ReportCase("best_detected", sample, score.Score, score.SmoothedMap, CaseMask(), image, score.Restored);
                    if (missed is null || score.Score < missed.Score) missed = new ReportCase("worst_missed", sample, score.Score, score.SmoothedMap, CaseMask(), image, score.Restored);
                }
                else
                {
                    if (falseAlarm is null || score.Score > falseAlarm.Score) falseAlarm = new ReportCase("worst_false_alarm", sample, score.Score, score.SmoothedMap, CaseMask(), image, score.Restored);
                    if (normalsForRestoration.Count < 4) normalsForRestoration.Add(image);
                }
                int eh = eval > 0 ? eval : h, ew = eval > 0 ? eval : w;
                var mask = gt?.Data ?? new byte[eh * ew];
                var evalMap = score.SmoothedMap.Height == eh && score.SmoothedMap.Width == ew ? score.SmoothedMap : AnomalyDetector.Bilinear(score.SmoothedMap, eh, ew);
                var map = Array.ConvertAll(evalMap.Data, v => (float)v);
                imageAuroc.Update([score.Score], [sample.IsAnomalous ? 1 : 0]);
                ap.Update([score.Score], [sample.IsAnomalous ? 1 : 0]);
                f1.Update([score.Score], [sample.IsAnomalous ? 1 : 0]);
                pixelAuroc.Update(map, mask);
                pixelF1.Update(map, mask);
                pro.Update(map, mask, eh, ew);
                progress?.Invoke($"eval {category}", ++done, tests.Count);
            }
            var m = new CategoryMetrics(category, images.Count, skippedHere, Safe(imageAuroc.Compute), Safe(ap.Compute), Safe(f1.Compute),
                Safe(pixelAuroc.Compute), Safe(pixelF1.Compute), Safe(pro.Compute), watch.Elapsed.TotalSeconds);
            log.LogInformation("{Category}: image AUROC {A:F3}, pixel AUROC {P:F3}, PRO {Pro:F3} ({N} images, {S:F0} s)", category, m.ImageAuroc, m.PixelAuroc, m.Pro, m.Images, m.Seconds);
            results.Add(m);
            scored[category] = images;
            if (meta.Calibration.GetValueOrDefault(category) is { } cal)
            {
                int tp = images.Count(i => i.Sample.IsAnomalous && i.Normalized >= 0.5), fp = images.Count(i => !i.Sample.IsAnomalous && i.Normalized >= 0.5);
                int fn = images.Count(i => i.Sample.IsAnomalous && i.Normalized < 0.5), tn = images.Count(i => !i.Sample.IsAnomalous && i.Normalized < 0.5);
                decisions[category] = new DecisionMetrics(cal.Normalization.Threshold, tp, fp, fn, tn);
                log.LogInformation("{Category}: at the calibrated threshold: precision {P:F3}, recall {R:F3}, F1 {F:F3}", category,
                                   decisions[category].Precision, decisions[category].Recall, decisions[category].F1);
            }
            cases[category] = new[] { best, missed, falseAlarm }.OfType<ReportCase>().DistinctBy(c => c.Sample.ImagePath).ToList();
            if (options.Masks != MaskStrategy.Prototype)
            {
                // Section 4 premise: the model restores normal appearance. Held-out normal test images, 4 random
                // rectangles each, masked-region MSE of the inpainting vs a masked Gaussian-blur fill.
                var normals = normalsForRestoration;
                if (normals.Count > 0)
                {
                    var inpaint = (options.Inpaint ?? new InpaintOptions()) with { NoiseStrength = prompts.NoiseStrength };
                    var r = Restoration.Check(model, category, normals, 4, inpaint, seed: 17);
                    restoration[category] = r;
                    log.LogInformation("{Category}: restoration of {Masks} masked regions: inpainting MSE {A:F5}, blur-fill MSE {B:F5}", category, r.Masks, r.InpaintMse, r.BlurFillMse);
                }
            }
        }
        var mean = new CategoryMetrics("mean", results.Sum(r => r.Images), results.Sum(r => r.Skipped), Mean(results, r => r.ImageAuroc),
            Mean(results, r => r.ImageAp), Mean(results, r => r.ImageF1Max), Mean(results, r => r.PixelAuroc), Mean(results, r => r.PixelF1Max),
            Mean(results, r => r.Pro), results.Sum(r => r.Seconds));
        return new EvaluationResult(results, mean, skipped, scored, total.Elapsed.TotalSeconds, cases, restoration, decisions, meta.Calibration);
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

    private static double Safe(Func<double> compute)
    {
        try { return compute(); }
        catch (InvalidOperationException) { return double.NaN; } // one class only: the metric is undefined
    }

    private static double Mean(IEnumerable<CategoryMetrics> rows, Func<CategoryMetrics, double> f)
    {
        var v = rows.Select(f).Where(x => !double.IsNaN(x)).ToList();
        return v.Count == 0 ? double.NaN : v.Average();
    }
}
