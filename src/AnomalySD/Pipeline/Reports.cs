using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Scoring;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace AnomalySD.Pipeline;

/// <summary>Visualisation helpers: pure functions from maps to pixels.</summary>
public static class Visuals
{
    /// <summary>A jet-like colormap of t in [0, 1] (blue → cyan → yellow → red).</summary>
    public static Rgb24 Colormap(double t)
    {
        t = Math.Clamp(t, 0, 1);
        double r = Math.Clamp(1.5 - Math.Abs(4 * t - 3), 0, 1), g = Math.Clamp(1.5 - Math.Abs(4 * t - 2), 0, 1), b = Math.Clamp(1.5 - Math.Abs(4 * t - 1), 0, 1);
        return new Rgb24((byte)(255 * r), (byte)(255 * g), (byte)(255 * b));
    }

    /// <summary>Pixels between the tiles of a <see cref="Panel"/>.</summary>
    public const int PanelGap = 4;

    /// <summary>
    /// A case as a strip of five tiles of the image's size, left to right (as anomalib's visualiser and the paper's Fig. 3):
    /// <list type="number">
    /// <item>the image;</item>
    /// <item>the anomaly map on a fixed scale (<paramref name="normalized"/>, values in [0, 1], 0.5 = the calibrated threshold)
    /// blended over the image, more opaque where the score is higher, so the product stays visible;</item>
    /// <item>the predicted region (<paramref name="predicted"/>: the map at the calibrated pixel threshold) in red over the image
    /// (the image alone when null);</item>
    /// <item>the ground-truth contour in green over the image (the image alone when there is no mask);</item>
    /// <item>the inpainted "normal" image of the mask that scored highest (grey when there is none).</item>
    /// </list>
    /// Tile k starts at x = k · (width + <see cref="PanelGap"/>); the gaps are black.
    /// </summary>
    public static Image<Rgb24> Panel(RgbImage image, Map2D normalized, BinaryMask? predicted, BinaryMask? groundTruth, RgbImage? restored)
    {
        int w = image.Width, h = image.Height;
        var panel = new Image<Rgb24>(5 * w + 4 * PanelGap, h, new Rgb24(0, 0, 0));
        byte B(float v) => (byte)Math.Clamp(v * 255 + 0.5f, 0, 255);
        Rgb24 Pixel(RgbImage im, int y, int x) => new(B(im[0, y, x]), B(im[1, y, x]), B(im[2, y, x]));
        static Rgb24 Mix(Rgb24 a, Rgb24 b, double t) =>
            new((byte)(a.R * (1 - t) + b.R * t), (byte)(a.G * (1 - t) + b.G * t), (byte)(a.B * (1 - t) + b.B * t));
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            var px = Pixel(image, y, x);
            double n = Math.Clamp(normalized[y, x], 0, 1);
            panel[x, y] = px;
            panel[(w + PanelGap) + x, y] = Mix(px, Colormap(n), 0.25 + 0.5 * n);
            panel[2 * (w + PanelGap) + x, y] = predicted is not null && predicted[y, x] != 0 ? Mix(px, new Rgb24(255, 0, 0), 0.6) : px;
            panel[3 * (w + PanelGap) + x, y] = groundTruth is not null && IsContour(groundTruth, y, x) ? new Rgb24(0, 255, 0) : px;
            panel[4 * (w + PanelGap) + x, y] = restored is not null ? Pixel(restored, y, x) : new Rgb24(128, 128, 128);
        }
        return panel;
    }

    /// <summary>Whether (y, x) is a marked pixel of <paramref name="mask"/> with an unmarked 4-neighbour (or on the border).</summary>
    public static bool IsContour(BinaryMask mask, int y, int x) =>
        mask[y, x] != 0 && (x == 0 || y == 0 || x == mask.Width - 1 || y == mask.Height - 1 ||
                            mask[y, x - 1] == 0 || mask[y, x + 1] == 0 || mask[y - 1, x] == 0 || mask[y + 1, x] == 0);

    /// <summary>The pixels of <paramref name="map"/> at or above <paramref name="threshold"/>.</summary>
    public static BinaryMask Region(Map2D map, double threshold) =>
        new(map.Width, map.Height, Array.ConvertAll(map.Data, v => v >= threshold ? (byte)1 : (byte)0));

    /// <summary>ROC points (FPR, TPR) over all distinct thresholds, ties grouped; starts at (0, 0), ends at (1, 1).</summary>
    public static (double[] Fpr, double[] Tpr) RocCurve(IReadOnlyList<double> scores, IReadOnlyList<bool> labels)
    {
        var order = Enumerable.Range(0, scores.Count).OrderByDescending(i => scores[i]).ToArray();
        int pos = labels.Count(l => l), neg = labels.Count - pos;
        var fpr = new List<double> { 0 };
        var tpr = new List<double> { 0 };
        int tp = 0, fp = 0;
        for (int k = 0; k < order.Length; k++)
        {
            if (labels[order[k]]) tp++; else fp++;
            if (k + 1 < order.Length && scores[order[k + 1]] == scores[order[k]]) continue;
            fpr.Add(neg == 0 ? 0 : fp / (double)neg);
            tpr.Add(pos == 0 ? 0 : tp / (double)pos);
        }
        return (fpr.ToArray(), tpr.ToArray());
    }
}

/// <summary>Writes results.json, report.md, ROC curve PNGs and heatmap overlays of the best and worst cases.</summary>
public static class ReportWriter
{
    /// <summary>Writes the report into <paramref name="outDir"/>. Every file is written atomically (<see cref="AtomicFile"/>), the
    /// figures first and results.json and report.md last, so a failure never leaves a truncated file or a report.md that
    /// points at missing figures.</summary>
    public static void Write(string outDir, EvaluationResult result, JsonObject run)
    {
        Directory.CreateDirectory(outDir);
        var json = new JsonObject
        {
            ["run"] = run,
            ["categories"] = new JsonObject(result.Categories.Select(c => new KeyValuePair<string, JsonNode?>(c.Category, Row(c)))),
            ["mean"] = Row(result.Mean),
            ["skipped"] = new JsonArray(result.Skipped.Select(s => (JsonNode)JsonValue.Create(s)!).ToArray()),
            ["wall_seconds"] = result.Seconds,
            ["calibration"] = new JsonObject((result.Calibration ?? new Dictionary<string, CategoryCalibration>()).Select(kv =>
                new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value.ToJson()))),
            ["decisions_at_calibrated_threshold"] = new JsonObject((result.Decisions ?? new Dictionary<string, DecisionMetrics>()).Select(kv =>
                new KeyValuePair<string, JsonNode?>(kv.Key, new JsonObject
                {
                    ["threshold_raw"] = kv.Value.Threshold, ["precision"] = Num(kv.Value.Precision), ["recall"] = Num(kv.Value.Recall), ["f1"] = Num(kv.Value.F1),
                    ["tp"] = kv.Value.TruePositives, ["fp"] = kv.Value.FalsePositives, ["fn"] = kv.Value.FalseNegatives, ["tn"] = kv.Value.TrueNegatives,
                }))),
            ["restoration"] = new JsonObject((result.Restoration ?? new Dictionary<string, RestorationResult>()).Select(kv =>
                new KeyValuePair<string, JsonNode?>(kv.Key, new JsonObject
                {
                    ["images"] = kv.Value.Images, ["masks"] = kv.Value.Masks,
                    ["inpaint_mse"] = Num(kv.Value.InpaintMse), ["blur_fill_mse"] = Num(kv.Value.BlurFillMse),
                }))),
        };

        var md = new StringBuilder();
        md.AppendLine("# AnomalySD evaluation").AppendLine();
        foreach (var (k, v) in run) md.AppendLine($"- {k}: {v?.ToJsonString().Trim('"')}");
        md.AppendLine($"- wall time: {result.Seconds:F0} s").AppendLine();
        md.AppendLine(Table(result));
        if (result.Calibration is { Count: > 0 } calibration)
        {
            md.AppendLine().AppendLine("Calibration (made at fit time from the shots: augmented normals and synthetic defects; no test image):").AppendLine();
            md.AppendLine("| category | λ | weight S_ms | weight S_pg | weight E | calibration image AUROC | calibration pixel AUROC | images (normal + defective) | image threshold (raw) |");
            md.AppendLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var (c, k) in calibration)
                md.AppendLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {c} | {k.NoiseStrength:0.##} | {k.Weights.MultiScale:0.##} | {k.Weights.Prototype:0.##} | {k.Weights.ErrorMap:0.##} | {k.ImageAuroc:F3} | {k.PixelAuroc:F3} | {k.Normals} + {k.Defectives} | {k.Normalization.Threshold:G4} |"));
        }
        if (result.Decisions is { Count: > 0 } decisions)
        {
            md.AppendLine().AppendLine("Decisions at the calibrated threshold (normalised score >= 0.5) against the test labels:").AppendLine();
            md.AppendLine("| category | precision | recall | F1 | TP | FP | FN | TN |").AppendLine("|---|---|---|---|---|---|---|---|");
            foreach (var (c, d) in decisions)
                md.AppendLine($"| {c} | {F(d.Precision)} | {F(d.Recall)} | {F(d.F1)} | {d.TruePositives} | {d.FalsePositives} | {d.FalseNegatives} | {d.TrueNegatives} |");
        }
        if (result.Restoration is { Count: > 0 } restoration)
        {
            md.AppendLine().AppendLine("Restoration of normal appearance (held-out normal images, random rectangles; masked-region MSE, RGB in [0, 1]):").AppendLine();
            md.AppendLine("| category | masks | inpainting MSE | Gaussian-blur fill MSE |").AppendLine("|---|---|---|---|");
            foreach (var (c, r) in restoration) md.AppendLine($"| {c} | {r.Masks} | {r.InpaintMse:F5} | {r.BlurFillMse:F5} |");
        }
        if (result.Skipped.Count > 0)
        {
            md.AppendLine().AppendLine($"Skipped files ({result.Skipped.Count}):");
            foreach (string s in result.Skipped) md.AppendLine($"- {s}");
        }
        md.AppendLine();
        foreach (var (category, images) in result.Scored)
        {
            if (images.Count == 0) continue;
            string roc = $"roc_{category}.png";
            PlotRoc(Path.Combine(outDir, roc), category, images);
            md.AppendLine($"## {category}").AppendLine().AppendLine($"![ROC {category}]({roc})").AppendLine();
            var picks = result.Cases.GetValueOrDefault(category) ?? [];
            var cal = result.Calibration?.GetValueOrDefault(category);
            double max = picks.Count == 0 ? 0 : picks.Max(i => i.Map.Max());
            if (picks.Count > 0)
                md.AppendLine(cal is null
                    ? "Each picture: image | anomaly map (scaled to the highest score of these cases) | (no calibrated pixel threshold) | ground truth | inpainting of the highest-scoring mask"
                    : "Each picture: image | anomaly map (normalised: 0.5 = the calibrated threshold) | predicted region at the calibrated pixel threshold | ground truth | inpainting of the highest-scoring mask")
                  .AppendLine();
            foreach (var pick in picks)
            {
                string file = $"{category}_{pick.Label}_{Sanitize(pick.Sample.Stem)}_{Sanitize(pick.Sample.DefectType)}.png";
                var normalized = cal is not null ? cal.Normalization.Apply(pick.Map) : new Map2D(pick.Map.Height, pick.Map.Width, Array.ConvertAll(pick.Map.Data, v => max > 0 ? v / max : 0));
                using var panel = Visuals.Panel(pick.Image, normalized, cal is null ? null : Visuals.Region(pick.Map, cal.PixelThreshold), pick.GroundTruth, pick.Restored);
                int scale = Math.Max(1, 256 / Math.Max(1, pick.Image.Width)); // small resolutions are enlarged to be readable
                if (scale > 1)
                    panel.Mutate(x => x.Resize(panel.Width * scale, panel.Height * scale, SixLabors.ImageSharp.Processing.KnownResamplers.NearestNeighbor));
                AtomicFile.Write(Path.Combine(outDir, file), s => panel.SaveAsPng(s));
                string normalizedScore = cal is null ? "" : string.Create(CultureInfo.InvariantCulture, $", normalised {cal.Normalization.Apply(pick.Score):F3}");
                md.AppendLine($"- {pick.Label}: `{pick.Sample.ImagePath}` score {pick.Score:G4}{normalizedScore} ({(pick.Sample.IsAnomalous ? "anomalous" : "normal")}) ![{pick.Label}]({file})");
            }
            md.AppendLine();
        }
        WriteAtomically(Path.Combine(outDir, "results.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        WriteAtomically(Path.Combine(outDir, "report.md"), md.ToString());
    }

    /// <summary>The metrics table (markdown).</summary>
    public static string Table(EvaluationResult r)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| category | images | image AUROC | image AP | image F1-max | pixel AUROC | pixel F1-max | PRO |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var c in r.Categories.Append(r.Mean))
            sb.AppendLine($"| {c.Category} | {c.Images} | {F(c.ImageAuroc)} | {F(c.ImageAp)} | {F(c.ImageF1Max)} | {F(c.PixelAuroc)} | {F(c.PixelF1Max)} | {F(c.Pro)} |");
        return sb.ToString();
    }

    private static void PlotRoc(string path, string category, IReadOnlyList<ScoredSample> images)
    {
        var (fpr, tpr) = Visuals.RocCurve(images.Select(i => i.Score).ToList(), images.Select(i => i.Sample.IsAnomalous).ToList());
        var plot = new ScottPlot.Plot();
        plot.Add.Scatter(fpr, tpr);
        plot.Add.Line(0, 0, 1, 1).LinePattern = ScottPlot.LinePattern.Dashed;
        plot.Title($"image ROC: {category}");
        plot.XLabel("false positive rate");
        plot.YLabel("true positive rate");
        byte[] png = plot.GetImageBytes(480, 400, ScottPlot.ImageFormat.Png);
        AtomicFile.Write(path, s => s.Write(png));
    }

    private static JsonObject Row(CategoryMetrics c) => new()
    {
        ["images"] = c.Images, ["skipped"] = c.Skipped,
        ["image_auroc"] = Num(c.ImageAuroc), ["image_ap"] = Num(c.ImageAp), ["image_f1_max"] = Num(c.ImageF1Max),
        ["pixel_auroc"] = Num(c.PixelAuroc), ["pixel_f1_max"] = Num(c.PixelF1Max), ["pro"] = Num(c.Pro), ["seconds"] = c.Seconds,
    };

    private static JsonNode? Num(double v) => double.IsNaN(v) ? null : JsonValue.Create(v);
    private static string F(double v) => double.IsNaN(v) ? "n/a" : v.ToString("F3", CultureInfo.InvariantCulture);
    private static string Sanitize(string s) => string.Concat(s.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '_' ? ch : '_'));

    /// <summary>Writes text to a temporary sibling, then renames it over <paramref name="path"/>.</summary>
    public static void WriteAtomically(string path, string text) => AtomicFile.WriteText(path, text);
}
