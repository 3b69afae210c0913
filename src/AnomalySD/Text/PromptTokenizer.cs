namespace AnomalySD.Text;

/// <summary>Turns prompts into fixed-length token-id rows for the text encoder.</summary>
public interface IPromptTokenizer
{
    /// <summary>Row length (77 for CLIP).</summary>
    int MaxLength { get; }

    /// <summary>The prompts as one row-major [prompts.Count, MaxLength] int64 array.</summary>
    long[] EncodePadded(IReadOnlyList<string> prompts);
}

/// <summary>The CLIP BPE tokenizer of a diffusers folder (<c>tokenizer/</c>).</summary>
public sealed class ClipPromptTokenizer(ClipTokenizer tokenizer) : IPromptTokenizer
{
    public int MaxLength => tokenizer.MaxLength;
    public long[] EncodePadded(IReadOnlyList<string> prompts) => tokenizer.EncodePadded(prompts);
}

/// <summary>
/// The tokenizer of the <c>compact</c> preset, which has no tokenizer files (the CLIP vocabulary is not
/// redistributed with AnomalySD): CLIP's cleanup and lower-casing, words and punctuation split as CLIP's
/// pre-tokeniser does, each piece mapped to id 1 + (FNV-1a hash mod 49405), framed by CLIP's BOS 49406 and
/// EOS 49407 and padded with EOS to 77. The compact text encoder is trained with these ids, so any stable
/// injective-enough mapping works; collisions only merge two rare words.
/// </summary>
public sealed class HashPromptTokenizer : IPromptTokenizer
{
    public const long Bos = 49406, Eos = 49407;
    public int MaxLength => 77;

    public long[] EncodePadded(IReadOnlyList<string> prompts)
    {
        var rows = new long[prompts.Count * MaxLength];
        for (int p = 0; p < prompts.Count; p++)
        {
            var ids = new List<long> { Bos };
            string text = ClipTokenizer.CleanText(prompts[p]).ToLowerInvariant();
            foreach (var (offset, length) in ClipPreTokenizer.Split(text))
            {
                if (ids.Count == MaxLength - 1) break;
                ids.Add(1 + (long)(IO.StableHash.Fnv1a64Chars(text.Substring(offset, length)) % 49405UL));
            }
            ids.Add(Eos);
            for (int i = 0; i < MaxLength; i++) rows[p * MaxLength + i] = i < ids.Count ? ids[i] : Eos;
        }
        return rows;
    }
}
