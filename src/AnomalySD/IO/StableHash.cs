using System.Text;

namespace AnomalySD.IO;

/// <summary>
/// FNV-1a hashes (Fowler, Noll and Vo; the published offset bases and primes), the one place that defines them: values that must
/// not change between processes, machines and versions (string.GetHashCode does). Each variant keeps the values it has always
/// given, because stored results depend on them: shard assignment (<see cref="Fnv1a64(string)"/> of UTF-8 paths), the compact
/// tokenizer's word ids (<see cref="Fnv1a64Chars"/>) and the per-category seeds of calibration (<see cref="Fnv1a31"/>).
/// </summary>
public static class StableHash
{
    private const ulong Offset64 = 14695981039346656037UL, Prime64 = 1099511628211UL;
    private const uint Offset32 = 2166136261, Prime32 = 16777619;

    /// <summary>FNV-1a 64 of the UTF-8 bytes of <paramref name="text"/>.</summary>
    public static ulong Fnv1a64(string text)
    {
        ulong h = Offset64;
        foreach (byte b in Encoding.UTF8.GetBytes(text)) h = (h ^ b) * Prime64;
        return h;
    }

    /// <summary>FNV-1a 64 over the UTF-16 code units of <paramref name="text"/> (each unit one step).</summary>
    public static ulong Fnv1a64Chars(string text)
    {
        ulong h = Offset64;
        foreach (char ch in text) h = (h ^ ch) * Prime64;
        return h;
    }

    /// <summary>FNV-1a 32 over the UTF-16 code units of <paramref name="text"/>, its low 31 bits (a non-negative int).</summary>
    public static int Fnv1a31(string text)
    {
        uint h = Offset32;
        foreach (char ch in text) h = (h ^ ch) * Prime32;
        return (int)(h & 0x7FFFFFFF);
    }
}
