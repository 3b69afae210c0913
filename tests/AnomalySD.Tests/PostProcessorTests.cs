using AnomalySD.Calibration;
using AnomalySD.Detection;
using AnomalySD.Metrics;
using AnomalySD.Scoring;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>The one decision rule (<see cref="PostProcessor"/>) and the one curve (<see cref="BinaryCurve"/>), by hand computation.</summary>
public sealed class PostProcessorTests
{
    private static CategoryCalibration Calibrated(double min, double threshold, double max, double pixelThreshold) =>
        new(0.4, FusionWeights.ErrorMapOnly, MapScales.Raw, ScoreNormalization.Create(min, threshold, max), pixelThreshold, 1, 1, 3, 3);

    [Fact]
    public void ACalibratedCategoryDecidesOnTheNormalisedScaleAtOneHalf()
    {
        // min 2, threshold 5, max 11: raw 5 -> 0.5, raw 8 -> 0.5 + 0.5 * 3/6 = 0.75, raw 3.5 -> 0.5 * 1.5/3 = 0.25.
        var post = new PostProcessor(Calibrated(2, 5, 11, pixelThreshold: 6));
        Assert.Equal(0.5, post.Threshold);
        Assert.Equal(0.75, post.Normalize(8));
        Assert.Equal(0.25, post.Normalize(3.5));
        Assert.True(post.Label(5)); // >= the threshold is anomalous
        Assert.False(post.Label(4.999));
        var map = new Map2D(1, 3, [3.5, 6.0, 8.0]);
        var r = post.Apply(8, map);
        Assert.Equal((8.0, 0.75, true, 0.5), (r.RawScore, r.Score!.Value, r.IsAnomalous!.Value, r.Threshold!.Value));
        Assert.Equal([0.25, 0.5 + 0.5 * 1 / 6.0, 0.75], r.DisplayMap.Data);
        Assert.Equal([0, 1, 1], r.PredictedMask!.Data); // the calibrated pixel threshold 6 on the raw map
        // A threshold given by the user replaces 0.5, on the same scale.
        var strict = new PostProcessor(Calibrated(2, 5, 11, 6), threshold: 0.8);
        Assert.False(strict.Label(8));
        Assert.Throws<ArgumentException>(() => new PostProcessor(Calibrated(2, 5, 11, 6), threshold: 1.5));
    }

    [Fact]
    public void AnUncalibratedCategoryKeepsRawScoresAndDecidesOnlyWhenGivenAThreshold()
    {
        var none = new PostProcessor(null);
        Assert.Null(none.Threshold);
        Assert.Null(none.Label(100));
        Assert.Null(none.Normalize(100));
        var map = new Map2D(1, 2, [2.0, 8.0]);
        var r = none.Apply(8, map);
        Assert.Null(r.PredictedMask);
        Assert.Equal([0.25, 1.0], r.DisplayMap.Data); // pictures: the map over its own maximum
        var raw = new PostProcessor(null, threshold: 7.5);
        Assert.True(raw.Label(8));
        Assert.False(raw.Label(7));
    }

    [Fact]
    public void OneCurveGivesTheRocTheF1ThresholdAndTheAreas()
    {
        // scores 0.9+, 0.8-, 0.8+, 0.1-: distinct thresholds 0.9, 0.8, 0.1 with (tp, fp) = (1, 0), (2, 1), (2, 2).
        var curve = BinaryCurve.From([0.9, 0.8, 0.8, 0.1], [true, false, true, false]);
        Assert.Equal([0.9, 0.8, 0.1], curve.Thresholds);
        Assert.Equal([1L, 2, 2], curve.TruePositives);
        Assert.Equal([0L, 1, 2], curve.FalsePositives);
        var (fpr, tpr) = curve.Roc();
        Assert.Equal([0, 0, 0.5, 1], fpr);
        Assert.Equal([0, 0.5, 1, 1], tpr);
        // F1 at 0.9: 2/(1+0+2) = 0.667; at 0.8: 4/(2+1+2) = 0.8; at 0.1: 4/6. Best 0.8, placed halfway to the next score: 0.45.
        var (t, f1) = curve.F1OptimalThreshold();
        Assert.Equal(0.45, t, 12);
        Assert.Equal(0.8, f1, 12);
        // AUROC = trapezoids over the ROC points: 0.5 * 0.75 + 0.5 * 1 = 0.875 (sklearn: 3.5 of 4 pairs ordered, the tie counting 1/2).
        var auroc = new ImageAuroc();
        auroc.Update([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]);
        Assert.Equal(0.875, auroc.Compute(), 12);
    }
}
