using System.Text.Json;

namespace AnomalySD.Tests;

/// <summary>Reads shared/golden/metrics/metrics_golden.json.</summary>
internal static class GoldenJson
{
    private static readonly Lazy<JsonDocument> Doc = new(() =>
        JsonDocument.Parse(File.ReadAllText(TestPaths.Shared("golden/metrics/metrics_golden.json"))));

    public static JsonElement Metrics => Doc.Value.RootElement;

    public static double[] Doubles(JsonElement e) => e.EnumerateArray().Select(v => v.GetDouble()).ToArray();

    public static int[] Ints(JsonElement e) => e.EnumerateArray().Select(v => v.GetInt32()).ToArray();

    /// <summary>A 2-D array [rows][cols] flattened row-major.</summary>
    public static double[] Flat2D(JsonElement e, out int rows, out int cols)
    {
        var r = e.EnumerateArray().Select(Doubles).ToArray();
        rows = r.Length;
        cols = r[0].Length;
        return r.SelectMany(x => x).ToArray();
    }
}
