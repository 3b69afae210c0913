using AnomalySD.Calibration;
using AnomalySD.Data;
using AnomalySD.Scoring;

namespace AnomalySD.Detection;

/// <summary>One image's detection: the raw and normalised scores, the decision, and the maps.</summary>
/// <param name="RawScore">The image score on the model's raw scale: the maximum of <paramref name="Map"/> (eq. 21, smoothed).</param>
/// <param name="Score">The normalised score in [0, 1] (<see cref="ScoreNormalization"/>: 0.5 = the calibrated threshold); null for an
/// uncalibrated category.</param>
/// <param name="IsAnomalous">Score (or, uncalibrated, raw score) &gt;= <paramref name="Threshold"/>; null without a threshold.</param>
/// <param name="Threshold">The decision threshold on the scale of the decision (normalised when calibrated, raw otherwise); null: none.</param>
/// <param name="Map">The smoothed anomaly map on the raw scale, at the analysis resolution (what metrics are computed on).</param>
/// <param name="DisplayMap">The map for pictures, in [0, 1]: normalised like the score when calibrated; else divided by the image's
/// own maximum.</param>
/// <param name="PredictedMask">Pixels of <paramref name="Map"/> at or above the calibrated pixel threshold; null when uncalibrated.</param>
/// <param name="Restored">The inpainting of the mask that scored highest (when asked for and a mask was inpainted).</param>
public sealed record DetectionResult(double RawScore, double? Score, bool? IsAnomalous, double? Threshold, Map2D Map, Map2D DisplayMap,
                                     BinaryMask? PredictedMask, RgbImage? Restored);

/// <summary>
/// The decision rule of one category, in one place (anomalib's <c>post_processing/one_class.py</c>): the normalisation of scores and
/// maps, the image threshold, the label and the predicted region. A calibrated category decides on the normalised scale, where
/// the calibrated image threshold is <see cref="NormalizedThreshold"/>; an uncalibrated one decides on the raw scale, and only
/// when a threshold is given.
/// </summary>
public sealed class PostProcessor
{
    /// <summary>The calibrated image threshold on the normalised scale (anomalib's convention).</summary>
    public const double NormalizedThreshold = 0.5;

    /// <param name="calibration">The category's calibration (null: uncalibrated, raw scores).</param>
    /// <param name="threshold">A threshold that replaces the default: on the normalised scale when calibrated (default 0.5), on the
    /// raw scale otherwise (default: no decision).</param>
    /// <exception cref="ArgumentException">a calibrated threshold outside [0, 1], or one that is not finite.</exception>
    public PostProcessor(CategoryCalibration? calibration, double? threshold = null)
    {
        if (threshold is double t && (!double.IsFinite(t) || calibration is not null && t is < 0 or > 1))
            throw new ArgumentException($"threshold {t} must be {(calibration is null ? "a finite raw score" : "in [0, 1] on the normalised scale")}");
        Calibration = calibration;
        Threshold = calibration is not null ? threshold ?? NormalizedThreshold : threshold;
    }

    public CategoryCalibration? Calibration { get; }

    /// <summary>The decision threshold (normalised when calibrated, raw otherwise); null: no decision.</summary>
    public double? Threshold { get; }

    public bool IsCalibrated => Calibration is not null;

    /// <summary>The normalised score of a raw score (null when uncalibrated).</summary>
    public double? Normalize(double rawScore) => Calibration?.Normalization.Apply(rawScore);

    /// <summary>The decision for a raw score: null without a threshold.</summary>
    public bool? Label(double rawScore) => Threshold is double t ? (Normalize(rawScore) ?? rawScore) >= t : null;

    /// <summary>The map on the scale of pictures, [0, 1]: the calibrated normalisation, or (uncalibrated) the map over its own maximum.</summary>
    public Map2D DisplayMap(Map2D map)
    {
        if (Calibration is { } c) return c.Normalization.Apply(map);
        double max = Math.Max(map.Max(), 1e-12);
        return new Map2D(map.Height, map.Width, Array.ConvertAll(map.Data, v => Math.Clamp(v / max, 0, 1)));
    }

    /// <summary>The predicted anomalous region: the pixels at or above the calibrated pixel threshold (null when uncalibrated).</summary>
    public BinaryMask? PredictedMask(Map2D map) => Calibration is { } c ? Region(map, c.PixelThreshold) : null;

    /// <summary>Everything about one image's raw score and map.</summary>
    public DetectionResult Apply(double rawScore, Map2D map, RgbImage? restored = null) =>
        new(rawScore, Normalize(rawScore), Label(rawScore), Threshold, map, DisplayMap(map), PredictedMask(map), restored);

    /// <summary>The pixels of <paramref name="map"/> at or above <paramref name="threshold"/>.</summary>
    public static BinaryMask Region(Map2D map, double threshold) =>
        new(map.Width, map.Height, Array.ConvertAll(map.Data, v => v >= threshold ? (byte)1 : (byte)0));
}
