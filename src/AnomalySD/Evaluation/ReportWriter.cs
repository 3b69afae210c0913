using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AnomalySD.Calibration;
using AnomalySD.Data;
using AnomalySD.IO;
using AnomalySD.Metrics;
using AnomalySD.Scoring;
using AnomalySD.Visualization;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Processing;

namespace AnomalySD.Evaluation;

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
        var (fpr, tpr) = BinaryCurve.From(images.Select(i => i.Score).ToList(), images.Select(i => i.Sample.IsAnomalous).ToList()).Roc();
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
