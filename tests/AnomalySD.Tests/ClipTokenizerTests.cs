using System.Text.Json;
using AnomalySD.Text;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>The CLIP BPE tokenizer against the golden ids of <c>shared/golden/tokenizer_clip</c>.</summary>
public sealed class ClipTokenizerTests : IDisposable
{
    private static readonly string GoldenDir = TestPaths.Shared("golden/tokenizer_clip");
    private static readonly Lazy<ClipTokenizer> Sd1 = new(() => ClipTokenizer.FromFolder(GoldenDir));
    private static readonly Lazy<ClipTokenizer> Sd2 = new(() => ClipTokenizer.FromFolder(GoldenDir, padToken: "!"));

    private readonly string _tmp = Directory.CreateTempSubdirectory("anomalysd-tok-").FullName;

    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    public sealed record GoldenCase(string Text, int[] IdsUnpadded, long[] IdsSd1, long[] IdsSd2);

    private static readonly Lazy<(int Bos, int Eos, int MaxLength, GoldenCase[] Cases)> Golden = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(GoldenDir, "golden_ids.json")));
        var root = doc.RootElement;
        var cases = root.GetProperty("cases").EnumerateArray().Select(c => new GoldenCase(
            c.GetProperty("text").GetString()!,
            c.GetProperty("ids_unpadded").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
            c.GetProperty("ids_sd1").EnumerateArray().Select(x => x.GetInt64()).ToArray(),
            c.GetProperty("ids_sd2").EnumerateArray().Select(x => x.GetInt64()).ToArray())).ToArray();
        return (root.GetProperty("bos").GetInt32(), root.GetProperty("eos").GetInt32(),
            root.GetProperty("max_length").GetInt32(), cases);
    });

    public static TheoryData<int> CaseIndices()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < Golden.Value.Cases.Length; i++)
        {
            data.Add(i);
        }
        return data;
    }

    [Fact]
    public void SpecialTokensAndLengthMatchGolden()
    {
        var tok = Sd1.Value;
        Assert.Equal(49406, tok.BosTokenId);
        Assert.Equal(49407, tok.EosTokenId);
        Assert.Equal(Golden.Value.Bos, tok.BosTokenId);
        Assert.Equal(Golden.Value.Eos, tok.EosTokenId);
        Assert.Equal(Golden.Value.MaxLength, tok.MaxLength);
        Assert.Equal(77, tok.MaxLength);
        Assert.Equal(49408, tok.VocabSize);
        Assert.Equal(49407, tok.PadTokenId);
        Assert.Equal("<|endoftext|>", tok.PadToken);
        Assert.Equal(0, Sd2.Value.PadTokenId);
        Assert.Equal("!", Sd2.Value.PadToken);
        Assert.True(Golden.Value.Cases.Length >= 9);
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void UnpaddedIdsMatchGolden(int index)
    {
        var c = Golden.Value.Cases[index];
        // The golden unpadded ids are truncated to max_length (HF truncation=True, no padding).
        Assert.Equal(c.IdsUnpadded, Sd1.Value.EncodeTruncated(c.Text));
        int[] full = Sd1.Value.Encode(c.Text);
        if (full.Length <= 77)
        {
            Assert.Equal(c.IdsUnpadded, full);
        }
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void Sd1PaddedIdsMatchGolden(int index)
    {
        var c = Golden.Value.Cases[index];
        long[] ids = Sd1.Value.EncodePadded(c.Text);
        Assert.Equal(77, ids.Length);
        Assert.Equal(c.IdsSd1, ids);
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void Sd2PaddedIdsMatchGolden(int index)
    {
        var c = Golden.Value.Cases[index];
        long[] ids = Sd2.Value.EncodePadded(c.Text);
        Assert.Equal(77, ids.Length);
        Assert.Equal(c.IdsSd2, ids);
    }

    [Fact]
    public void BatchEncodingIsRowMajorConcatenation()
    {
        var cases = Golden.Value.Cases;
        long[] batch = Sd2.Value.EncodePadded(cases.Select(c => c.Text).ToArray());
        Assert.Equal(cases.Length * 77, batch.Length);
        for (int b = 0; b < cases.Length; b++)
        {
            Assert.Equal(cases[b].IdsSd2, batch.AsSpan(b * 77, 77).ToArray());
        }
    }

    [Fact]
    public void EmptyPromptIsBosEos()
    {
        Assert.Equal([49406, 49407], Sd1.Value.Encode(""));
        Assert.Equal([49406, 49407], Sd1.Value.Encode("  \t\n "));
    }

    [Fact]
    public void LongPromptIsTruncatedWithEosLast()
    {
        string text = string.Join(' ', Enumerable.Repeat("photo", 100));
        int[] full = Sd1.Value.Encode(text);
        Assert.Equal(102, full.Length);
        Assert.Equal(49406, full[0]);
        Assert.Equal(49407, full[^1]);
        Assert.All(full[1..^1], id => Assert.Equal(1125, id)); // "photo</w>" (cf. golden case 2)

        int[] cut = Sd1.Value.EncodeTruncated(text);
        Assert.Equal(77, cut.Length);
        Assert.Equal(49406, cut[0]);
        Assert.Equal(49407, cut[76]);
        Assert.All(cut[1..76], id => Assert.Equal(1125, id));

        long[] padded = Sd2.Value.EncodePadded(text);
        Assert.Equal(77, padded.Length);
        Assert.Equal(49407L, padded[76]);
        Assert.DoesNotContain(0L, padded);
    }

    [Fact]
    public void PromptOfExactlyMaxLengthIsNotPadded()
    {
        // 75 words + BOS + EOS = 77: no pad, EOS at the end.
        string text = string.Join(' ', Enumerable.Repeat("photo", 75));
        long[] ids = Sd2.Value.EncodePadded(text);
        Assert.Equal(49407L, ids[76]);
        Assert.Equal(1125L, ids[75]);
        Assert.Equal(ids.Select(x => (int)x).ToArray(), Sd2.Value.Encode(text));
    }

    [Fact]
    public void CleanupLowerCasesAndCollapsesWhiteSpace()
    {
        Assert.Equal("a metal_nut, flawless", ClipTokenizer.CleanText("  A\tMETAL_NUT,\n\n flawless \r\n"));
        var tok = Sd1.Value;
        Assert.Equal(tok.Encode("a photo of a bottle"), tok.Encode("A  PHOTO\tof a\nBottle "));
        // Non-ASCII letters are lower-cased too (golden case "café crème — naïve façade").
        Assert.Equal(tok.Encode("café crème"), tok.Encode("CAFÉ CRÈME"));
    }

    [Fact]
    public void SpecialTokenStringsInTextMapToTheirIds()
    {
        var tok = Sd1.Value;
        int[] plain = tok.Encode("a bottle");
        int[] withEos = tok.Encode("a <|endoftext|> bottle");
        Assert.Equal([plain[0], plain[1], 49407, plain[2], plain[3]], withEos);
    }

    [Fact]
    public void ContractionsAndDigitsSplitLikeClip()
    {
        var tok = Sd1.Value;
        // From golden case "Hazelnut's shell: smooth & unbroken (100%).": 's is its own piece, digits are single pieces.
        var golden = Golden.Value.Cases.Single(c => c.Text.StartsWith("Hazelnut's", StringComparison.Ordinal));
        Assert.Equal(golden.IdsUnpadded, tok.Encode("HAZELNUT'S shell:   smooth & unbroken (100%)."));
        int one = tok.TokenToId("1</w>")!.Value;
        int zero = tok.TokenToId("0</w>")!.Value;
        Assert.Equal([49406, one, zero, zero, 49407], tok.Encode("100"));
    }

    /// <summary>Edge cases beyond the golden file. Expected ids were computed with the algorithm of OpenAI
    /// <c>simple_tokenizer.py</c> (Python <c>regex</c> module, NFC + whitespace_clean + lower instead of ftfy)
    /// on the same vocab.json / merges.txt.</summary>
    public static TheoryData<string, int[]> ReferenceCases() => new()
    {
        // emoji: byte-level fallback, no unknown token
        { "a photo of a \U0001F34E apple \U0001F600\U0001F600!", [49406, 320, 1125, 539, 320, 32069, 3055, 12832, 12832, 256, 49407] },
        // letters and digits outside the BMP are \p{L} / \p{N} (digits one piece each)
        { "\U0001D400\U0001D401\U0001D402 bold math letters \U0001D7CF\U0001D7D0", [49406, 15889, 222, 15889, 223, 15889, 480, 8911, 6025, 9181, 6874, 253, 493, 6874, 253, 494, 49407] },
        { "don't you're we've I'm they'll he'd it's", [49406, 847, 713, 592, 982, 649, 1200, 328, 880, 889, 1342, 797, 1896, 585, 568, 49407] },
        // special token strings inside words, case-insensitive
        { "a<|startoftext|>b<|ENDOFTEXT|>c", [49406, 320, 49406, 321, 49407, 322, 49407] },
        // U+001F is not White_Space (kept as a symbol) but U+0085 is
        { "a\u001fb\u0085c", [49406, 320, 475, 321, 322, 49407] },
        // ...while str.strip() removes U+001C..U+001F at the ends
        { "\u001f lead and trail \u001e ", [49406, 2784, 537, 4921, 49407] },
    };

    [Theory]
    [MemberData(nameof(ReferenceCases))]
    public void EdgeCasesMatchReferenceAlgorithm(string text, int[] expected)
    {
        Assert.Equal(expected, Sd1.Value.Encode(text));
    }

    [Fact]
    public void PadTokenIsReadFromTokenizerConfigAsString()
    {
        string config = Path.Combine(_tmp, "tokenizer_config.json");
        File.WriteAllText(config, """{"model_max_length": 77, "pad_token": "!"}""");
        var tok = ClipTokenizer.FromFiles(Path.Combine(GoldenDir, "vocab.json"), Path.Combine(GoldenDir, "merges.txt"), [config]);
        Assert.Equal(0, tok.PadTokenId);
        Assert.Equal(77, tok.MaxLength);
        var c = Golden.Value.Cases[0];
        Assert.Equal(c.IdsSd2, tok.EncodePadded(c.Text));
    }

    [Fact]
    public void PadTokenIsReadFromTokenizerConfigAsObject()
    {
        string config = Path.Combine(_tmp, "tokenizer_config.json");
        File.WriteAllText(config, """
            {"pad_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": false,
             "normalized": true, "rstrip": false, "single_word": false}, "model_max_length": 1000000000000000019884624838656}
            """);
        var tok = ClipTokenizer.FromFiles(Path.Combine(GoldenDir, "vocab.json"), Path.Combine(GoldenDir, "merges.txt"), [config]);
        Assert.Equal(49407, tok.PadTokenId);
        Assert.Equal(77, tok.MaxLength); // HF's "no limit" 1e30 is ignored
        var c = Golden.Value.Cases[1];
        Assert.Equal(c.IdsSd1, tok.EncodePadded(c.Text));
    }

    [Fact]
    public void FolderConfigIsUsedAndExplicitPadTokenOverridesIt()
    {
        // A diffusers-style folder in a temp dir (test time only): files copied from the golden folder.
        File.Copy(Path.Combine(GoldenDir, "vocab.json"), Path.Combine(_tmp, "vocab.json"));
        File.Copy(Path.Combine(GoldenDir, "merges.txt"), Path.Combine(_tmp, "merges.txt"));
        File.WriteAllText(Path.Combine(_tmp, "special_tokens_map.json"), """{"pad_token": {"content": "!"}}""");
        Assert.Equal(0, ClipTokenizer.FromFolder(_tmp).PadTokenId);
        Assert.Equal(49407, ClipTokenizer.FromFolder(_tmp, padToken: "<|endoftext|>").PadTokenId);

        // tokenizer_config.json is consulted before special_tokens_map.json.
        File.WriteAllText(Path.Combine(_tmp, "tokenizer_config.json"), """{"pad_token": "<|endoftext|>"}""");
        Assert.Equal(49407, ClipTokenizer.FromFolder(_tmp).PadTokenId);
    }

    [Fact]
    public void PadTokenNotInVocabularyIsRejected()
    {
        var e = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromFolder(GoldenDir, padToken: "<pad>"));
        Assert.Contains("<pad>", e.Message);
    }

    [Fact]
    public void MissingMergesNamesTheFile()
    {
        string vocab = Path.Combine(GoldenDir, "vocab.json");
        string merges = Path.Combine(_tmp, "merges.txt");
        var e = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromFiles(vocab, merges));
        Assert.Equal(merges, e.FileName);
        Assert.Contains(merges, e.Message);
    }

    [Fact]
    public void MissingFolderFilesNameTheFile()
    {
        var e = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromFolder(_tmp));
        Assert.Contains(Path.Combine(_tmp, "vocab.json"), e.Message);
        Assert.Throws<DirectoryNotFoundException>(() => ClipTokenizer.FromFolder(Path.Combine(_tmp, "nope")));
    }

    [Fact]
    public void CorruptVocabNamesTheFile()
    {
        string vocab = Path.Combine(_tmp, "vocab.json");
        File.WriteAllText(vocab, "{\"a\": 1, ");
        var e = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromFiles(vocab, Path.Combine(GoldenDir, "merges.txt")));
        Assert.Contains(vocab, e.Message);
    }

    [Fact]
    public void CorruptMergesNamesFileAndLine()
    {
        string merges = Path.Combine(_tmp, "merges.txt");
        File.WriteAllText(merges, "#version: 0.2\ni n\nthis-line-has-no-space\n");
        var e = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromFiles(Path.Combine(GoldenDir, "vocab.json"), merges));
        Assert.Contains(merges, e.Message);
        Assert.Contains("line 3", e.Message);
    }

    [Fact]
    public void VocabularyWithoutClipSpecialTokensIsRejected()
    {
        string vocab = Path.Combine(_tmp, "vocab.json");
        File.WriteAllText(vocab, """{"a": 0, "b": 1, "ab": 2}""");
        string merges = Path.Combine(_tmp, "merges.txt");
        File.WriteAllText(merges, "#version: 0.2\na b\n");
        var e = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromFiles(vocab, merges));
        Assert.Contains("<|startoftext|>", e.Message);
    }
}
