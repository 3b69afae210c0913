using System.Text.Json;

namespace AnomalySD.ModelPrep;

/// <summary>Reads the "__metadata__" string map of a safetensors file (8-byte little-endian header length + JSON).</summary>
public static class SafetensorsMetadata
{
    public static Dictionary<string, string> Read(string path)
    {
        using var f = File.OpenRead(path);
        Span<byte> len = stackalloc byte[8];
        f.ReadExactly(len);
        ulong n = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(len);
        if (n > 100_000_000 || (long)n > f.Length - 8) throw new InvalidDataException($"{path}: bad safetensors header length {n}");
        var header = new byte[n];
        f.ReadExactly(header);
        using var doc = JsonDocument.Parse(header);
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (doc.RootElement.TryGetProperty("__metadata__", out JsonElement meta))
            foreach (JsonProperty p in meta.EnumerateObject()) result[p.Name] = p.Value.GetString() ?? "";
        return result;
    }
}
