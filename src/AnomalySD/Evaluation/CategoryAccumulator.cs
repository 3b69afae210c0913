using AnomalySD.Data;
using AnomalySD.Detection;
using AnomalySD.Metrics;
using AnomalySD.Scoring;

namespace AnomalySD.Evaluation;

/// <summary>
/// Metrics of one category, fed one <see cref="ImageRecord"/> at a time in index order: image AUROC / AP / F1-max, pixel
/// AUROC / F1-max, PRO (FPR limit 0.3), the report's cases and the decisions at the calibrated threshold.
/// </summary>
public sealed class CategoryAccumulator(string category, PostProcessor decisions)
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
        if (decisions.Calibration is not { } calibration) return null;
        int tp = 0, fp = 0, fn = 0, tn = 0;
        foreach (var i in _scored)
        {
            bool flagged = decisions.Label(i.Score) == true;
            if (i.Sample.IsAnomalous) { if (flagged) tp++; else fn++; }
            else if (flagged) fp++;
            else tn++;
        }
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
