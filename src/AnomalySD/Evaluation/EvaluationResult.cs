using AnomalySD.Calibration;
using AnomalySD.Data;
using AnomalySD.Metrics;
using AnomalySD.Scoring;

namespace AnomalySD.Evaluation;

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

/// <summary>How <see cref="Evaluator.Run"/> runs.</summary>
/// <param name="MaxImagesPerCategory">Evaluate at most this many test images per category (normal and anomalous both kept).</param>
/// <param name="EvalSize">Evaluation resolution (null = the checkpoint's; 0 = original size).</param>
/// <param name="Include">Score only the test images it accepts (a shard's); null = all. The restoration check runs only for all.</param>
/// <param name="OnRecord">Called for every scored image, in index order (a shard writer).</param>
public sealed record EvaluationOptions(int? MaxImagesPerCategory = null, int? EvalSize = null, Func<Sample, bool>? Include = null,
                                       Action<ImageRecord>? OnRecord = null);
