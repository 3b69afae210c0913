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

    /// <summary>The image blended 50/50 with the colormapped anomaly map (normalised by <paramref name="max"/>), with the
    /// ground-truth outline (if any) in white.</summary>
    public static Image<Rgb24> Overlay(RgbImage image, Map2D map, double max, BinaryMask? groundTruth)
    {
        int w = image.Width, h = image.Height;
        var result = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            var c = Colormap(max > 0 ? map[y, x] / max : 0);
            byte Mix(float v, byte m) => (byte)Math.Clamp(0.5 * v * 255 + 0.5 * m, 0, 255);
            var px = new Rgb24(Mix(image[0, y, x], c.R), Mix(image[1, y, x], c.G), Mix(image[2, y, x], c.B));
            if (groundTruth is not null && groundTruth[y, x] == 1 &&
                (x == 0 || y == 0 || x == w - 1 || y == h - 1 || groundTruth[y, x - 1] == 0 || groundTruth[y, x + 1] == 0 || groundTruth[y - 1, x] == 0 || groundTruth[y + 1, x] == 0))
                px = new Rgb24(255, 255, 255);
            result[x, y] = px;
        }
        return result;
    }

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
            double max = picks.Count == 0 ? 0 : picks.Max(i => i.Map.Max());
            foreach (var pick in picks)
            {
                string file = $"{category}_{pick.Label}_{Sanitize(pick.Sample.Stem)}_{Sanitize(pick.Sample.DefectType)}.png";
                using var overlay = Visuals.Overlay(pick.Image, pick.Map, max, pick.GroundTruth);
                int scale = Math.Max(1, 256 / Math.Max(1, pick.Image.Width)); // small model resolutions are enlarged to be readable
                if (scale > 1)
                    overlay.Mutate(x => x.Resize(pick.Image.Width * scale, pick.Image.Height * scale, SixLabors.ImageSharp.Processing.KnownResamplers.NearestNeighbor));
                AtomicFile.Write(Path.Combine(outDir, file), s => overlay.SaveAsPng(s));
                md.AppendLine($"- {pick.Label}: `{pick.Sample.ImagePath}` score {pick.Score:G4} ({(pick.Sample.IsAnomalous ? "anomalous" : "normal")}) ![{pick.Label}]({file})");
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
