using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace AnomalySD.Text;

/// <summary>
/// The CLIP byte-level BPE tokenizer used by Stable Diffusion's text encoder (49408 tokens).
/// </summary>
/// <remarks>
/// <para>Follows OpenAI CLIP <c>clip/simple_tokenizer.py</c> and Hugging Face <c>CLIPTokenizer</c>
/// (<c>transformers/models/clip/tokenization_clip.py</c>), as used by diffusers pipelines:</para>
/// <list type="number">
/// <item>Text cleanup (<see cref="CleanText"/>): runs of white space become one space, leading/trailing
/// white space is removed, then the text is lower-cased. ftfy's <c>fix_text</c> (mojibake repair) and
/// OpenAI's extra <c>html.unescape</c> are not applied: HF <c>CLIPTokenizer</c> does not unescape HTML,
/// and for well-formed text ftfy only NFC-normalises. NFC is requested here too, but it only takes effect
/// when the process has globalization data: under <c>InvariantGlobalization</c> (this repository's
/// default) .NET leaves non-ASCII text unnormalised, so decomposed accents (<c>e</c> + U+0301) give other
/// ids than precomposed ones (<c>é</c>). Prompts are normally precomposed.</item>
/// <item>Pre-tokenisation with CLIP's pattern
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// (case-insensitive), implemented by <see cref="ClipPreTokenizer"/> on Unicode scalar values, so letters
/// outside the BMP count as letters as they do with Python's <c>regex</c> module.</item>
/// <item>Each piece is UTF-8 encoded and mapped byte-to-unicode (GPT-2 <c>bytes_to_unicode</c>), the
/// last symbol gets the end-of-word suffix <c>&lt;/w&gt;</c>, and BPE merges are applied in rank order
/// (the first 49152-256-2 lines of <c>merges.txt</c> after the version header, as CLIP and HF do).
/// The BPE step itself (merge ranks, byte-level mapping, per-word cache) is
/// <see cref="BpeTokenizer"/> from Microsoft.ML.Tokenizers 2.0.1, which reproduces the golden ids.</item>
/// <item>The ids are framed as <c>[BOS] ... [EOS]</c> with BOS = id of <c>&lt;|startoftext|&gt;</c> (49406)
/// and EOS = id of <c>&lt;|endoftext|&gt;</c> (49407), both read from the vocabulary.</item>
/// </list>
/// <para>Truncation (HF <c>truncation=True, max_length=77</c>) keeps BOS, the first
/// <c>MaxLength - 2</c> text tokens and EOS as the last token. Padding (<c>padding="max_length"</c>)
/// appends the pad token: SD 1.x tokenizers pad with <c>&lt;|endoftext|&gt;</c> (49407), SD 2.x with
/// <c>!</c> (0).</para>
/// <para>Instances are immutable and safe to use from several threads.</para>
/// </remarks>
public sealed class ClipTokenizer
{
    /// <summary>Stable Diffusion's text context length (CLIP <c>max_position_embeddings</c>).</summary>
    public const int DefaultMaxLength = 77;

    /// <summary>Start-of-text token string.</summary>
    public const string StartOfText = "<|startoftext|>";

    /// <summary>End-of-text token string (also SD 1.x's pad token).</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>Number of merges CLIP uses: <c>49152 - 256 - 2</c>.</summary>
    public const int ClipMergeCount = 49152 - 256 - 2;

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;

    private ClipTokenizer(BpeTokenizer bpe, Dictionary<string, int> vocab, int bos, int eos,
        string padToken, int padId, int maxLength)
    {
        _bpe = bpe;
        _vocab = vocab;
        BosTokenId = bos;
        EosTokenId = eos;
        PadToken = padToken;
        PadTokenId = padId;
        MaxLength = maxLength;
    }

    /// <summary>Length of padded / truncated sequences (77 for Stable Diffusion).</summary>
    public int MaxLength { get; }

    /// <summary>Id of <c>&lt;|startoftext|&gt;</c> (49406 in the CLIP vocabulary).</summary>
    public int BosTokenId { get; }

    /// <summary>Id of <c>&lt;|endoftext|&gt;</c> (49407 in the CLIP vocabulary).</summary>
    public int EosTokenId { get; }

    /// <summary>The pad token string (<c>&lt;|endoftext|&gt;</c> for SD 1.x, <c>!</c> for SD 2.x).</summary>
    public string PadToken { get; }

    /// <summary>Id of <see cref="PadToken"/> (49407 for SD 1.x, 0 for SD 2.x).</summary>
    public int PadTokenId { get; }

    /// <summary>Number of entries in <c>vocab.json</c> (49408 for CLIP).</summary>
    public int VocabSize => _vocab.Count;

    /// <summary>
    /// Loads a diffusers <c>tokenizer/</c> folder: <c>vocab.json</c>, <c>merges.txt</c> and, when present,
    /// <c>tokenizer_config.json</c> / <c>special_tokens_map.json</c> for the pad token and
    /// <c>model_max_length</c>.
    /// </summary>
    /// <param name="dir">The folder.</param>
    /// <param name="padToken">Pad token override. When null, the folder's config files decide
    /// (<c>tokenizer_config.json</c> first, then <c>special_tokens_map.json</c>); without either,
    /// <c>&lt;|endoftext|&gt;</c> (SD 1.x, HF <c>CLIPTokenizer</c>'s default).</param>
    /// <param name="maxLength">Sequence length override; when null, <c>model_max_length</c> from
    /// <c>tokenizer_config.json</c> if present and sensible, else 77.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException"><c>vocab.json</c> or <c>merges.txt</c> is missing.</exception>
    /// <exception cref="InvalidDataException">A file is corrupt (message names it).</exception>
    public static ClipTokenizer FromFolder(string dir, string? padToken = null, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(dir);
        if (!Directory.Exists(dir))
        {
            throw new DirectoryNotFoundException($"Tokenizer folder not found: '{dir}'.");
        }

        string config = Path.Combine(dir, "tokenizer_config.json");
        string specialMap = Path.Combine(dir, "special_tokens_map.json");
        var configs = new List<string>();
        if (File.Exists(config))
        {
            configs.Add(config);
        }
        if (File.Exists(specialMap))
        {
            configs.Add(specialMap);
        }
        return FromFiles(Path.Combine(dir, "vocab.json"), Path.Combine(dir, "merges.txt"), configs, padToken, maxLength);
    }

    /// <summary>
    /// Loads the tokenizer from explicit file paths.
    /// </summary>
    /// <param name="vocabPath"><c>vocab.json</c>: a JSON object token string -> id (ids in [0, 2^31)).</param>
    /// <param name="mergesPath"><c>merges.txt</c>: an optional <c>#version</c> line, then one merge
    /// <c>"a b"</c> per line in rank order.</param>
    /// <param name="configPaths">Optional <c>tokenizer_config.json</c> / <c>special_tokens_map.json</c>
    /// files, searched in order for <c>pad_token</c> (a string or an object with <c>content</c>) and
    /// <c>model_max_length</c>. Each listed file must exist.</param>
    /// <param name="padToken">Pad token override (wins over the config files).</param>
    /// <param name="maxLength">Sequence length override (wins over <c>model_max_length</c>).</param>
    public static ClipTokenizer FromFiles(string vocabPath, string mergesPath,
        IEnumerable<string>? configPaths = null, string? padToken = null, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(vocabPath);
        ArgumentNullException.ThrowIfNull(mergesPath);

        var vocab = ReadVocab(vocabPath);
        var merges = ReadMerges(mergesPath, vocab);

        string? configPad = null;
        int? configMax = null;
        foreach (string path in configPaths ?? [])
        {
            var (pad, max) = ReadConfig(path);
            configPad ??= pad;
            configMax ??= max;
        }

        int resolvedMax = maxLength ?? configMax ?? DefaultMaxLength;
        if (resolvedMax < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(maxLength), resolvedMax,
                "max_length must be at least 2 (BOS and EOS).");
        }

        if (!vocab.TryGetValue(StartOfText, out int bos))
        {
            throw new InvalidDataException($"'{vocabPath}' has no '{StartOfText}' entry; not a CLIP vocabulary.");
        }
        if (!vocab.TryGetValue(EndOfText, out int eos))
        {
            throw new InvalidDataException($"'{vocabPath}' has no '{EndOfText}' entry; not a CLIP vocabulary.");
        }

        string resolvedPad = padToken ?? configPad ?? EndOfText;
        if (!vocab.TryGetValue(resolvedPad, out int padId))
        {
            string source = padToken is not null ? "the padToken argument" : configPad is not null ? "the tokenizer config" : "the default";
            throw new InvalidDataException($"Pad token '{resolvedPad}' (from {source}) is not in '{vocabPath}'.");
        }

        var special = new Dictionary<string, int> { [StartOfText] = bos, [EndOfText] = eos };
        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                SpecialTokens = special,
                Normalizer = ClipNormalizer.Instance,
                PreTokenizer = ClipPreTokenizer.Instance,
                EndOfWordSuffix = "</w>",
                ByteLevel = true,
            });
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException(
                $"Cannot build the BPE model from '{vocabPath}' and '{mergesPath}': {e.Message}", e);
        }

        return new ClipTokenizer(bpe, vocab, bos, eos, resolvedPad, padId, resolvedMax);
    }

    /// <summary>
    /// CLIP's text cleanup: NFC (when globalization data is available, see remarks on the class),
    /// runs of Unicode White_Space to one space, Python <c>strip()</c>, lower-case
    /// (<c>whitespace_clean(basic_clean(text)).lower()</c> without ftfy's mojibake repair).
    /// </summary>
    public static string CleanText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string nfc = text.IsNormalized(NormalizationForm.FormC) ? text : text.Normalize(NormalizationForm.FormC);
        // whitespace_clean: re.sub(r"\s+", " ", text).strip() with the `regex` module, whose \s is the
        // Unicode White_Space property (= Rune.IsWhiteSpace); str.strip additionally strips U+001C..U+001F.
        var sb = new StringBuilder(nfc.Length);
        bool inSpace = false;
        foreach (Rune r in nfc.EnumerateRunes())
        {
            if (Rune.IsWhiteSpace(r))
            {
                if (!inSpace)
                {
                    sb.Append(' ');
                    inSpace = true;
                }
                continue;
            }
            inSpace = false;
            sb.Append(r.ToString());
        }
        return sb.ToString().Trim(StripChars).ToLowerInvariant();
    }

    /// <summary>
    /// Encodes <paramref name="text"/> as <c>[BOS, tokens..., EOS]</c>, not truncated and not padded.
    /// </summary>
    /// <returns>Ids in [0, <see cref="VocabSize"/>), length &gt;= 2.</returns>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        IReadOnlyList<int> body = _bpe.EncodeToIds(text);
        var ids = new int[body.Count + 2];
        ids[0] = BosTokenId;
        for (int i = 0; i < body.Count; i++)
        {
            ids[i + 1] = body[i];
        }
        ids[^1] = EosTokenId;
        return ids;
    }

    /// <summary>
    /// Encodes and truncates to at most <see cref="MaxLength"/> ids, keeping EOS as the last id
    /// (HF <c>truncation=True</c>); not padded.
    /// </summary>
    /// <returns>Ids, length in [2, <see cref="MaxLength"/>].</returns>
    public int[] EncodeTruncated(string text)
    {
        int[] ids = Encode(text);
        if (ids.Length <= MaxLength)
        {
            return ids;
        }
        var cut = new int[MaxLength];
        Array.Copy(ids, cut, MaxLength - 1);
        cut[^1] = EosTokenId;
        return cut;
    }

    /// <summary>
    /// Encodes, truncates (EOS last) and pads with <see cref="PadTokenId"/> to exactly
    /// <see cref="MaxLength"/> ids: the <c>input_ids</c> row for the text encoder.
    /// </summary>
    /// <returns>Shape [MaxLength] int64.</returns>
    public long[] EncodePadded(string text)
    {
        var row = new long[MaxLength];
        WritePadded(text, row);
        return row;
    }

    /// <summary>
    /// Encodes a batch as row-major <c>input_ids</c> of shape [texts.Count, MaxLength] int64.
    /// </summary>
    public long[] EncodePadded(IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var batch = new long[texts.Count * MaxLength];
        for (int b = 0; b < texts.Count; b++)
        {
            WritePadded(texts[b], batch.AsSpan(b * MaxLength, MaxLength));
        }
        return batch;
    }

    /// <summary>Id of a vocabulary entry (byte-level form, e.g. <c>"photo&lt;/w&gt;"</c>), or null.</summary>
    public int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    private void WritePadded(string text, Span<long> row)
    {
        int[] ids = EncodeTruncated(text);
        for (int i = 0; i < ids.Length; i++)
        {
            row[i] = ids[i];
        }
        row[ids.Length..].Fill(PadTokenId);
    }

    private static Dictionary<string, int> ReadVocab(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"CLIP vocabulary not found: '{path}'.", path);
        }
        Dictionary<string, int>? vocab;
        try
        {
            using var stream = File.OpenRead(path);
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(stream);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not a valid vocab.json (JSON object of token -> int id): {e.Message}", e);
        }
        if (vocab is null || vocab.Count == 0)
        {
            throw new InvalidDataException($"'{path}' is empty; expected a JSON object of token -> int id.");
        }
        foreach (var (token, id) in vocab)
        {
            if (id < 0)
            {
                throw new InvalidDataException($"'{path}': token '{token}' has negative id {id}.");
            }
        }
        return vocab;
    }

    private static List<string> ReadMerges(string path, Dictionary<string, int> vocab)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"CLIP merges file not found: '{path}'.", path);
        }
        var merges = new List<string>(ClipMergeCount);
        int lineNo = 0;
        foreach (string raw in File.ReadLines(path))
        {
            lineNo++;
            string line = raw.TrimEnd('\r');
            if (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal))
            {
                continue;
            }
            if (line.Length == 0)
            {
                continue;
            }
            if (merges.Count == ClipMergeCount)
            {
                break; // CLIP / HF use only the first 49152-256-2 merges.
            }
            int space = line.IndexOf(' ');
            if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
            {
                throw new InvalidDataException($"'{path}' line {lineNo}: expected two symbols separated by one space, got '{line}'.");
            }
            string merged = string.Concat(line.AsSpan(0, space), line.AsSpan(space + 1));
            if (!vocab.ContainsKey(merged))
            {
                throw new InvalidDataException($"'{path}' line {lineNo}: merge result '{merged}' is not in the vocabulary.");
            }
            merges.Add(line);
        }
        if (merges.Count == 0)
        {
            throw new InvalidDataException($"'{path}' contains no merges.");
        }
        return merges;
    }

    private static (string? Pad, int? MaxLength) ReadConfig(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Tokenizer config not found: '{path}'.", path);
        }
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"'{path}' is not a JSON object.");
            }
            string? pad = null;
            if (doc.RootElement.TryGetProperty("pad_token", out var p))
            {
                pad = p.ValueKind switch
                {
                    JsonValueKind.String => p.GetString(),
                    JsonValueKind.Object when p.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                    JsonValueKind.Null => null,
                    _ => throw new InvalidDataException($"'{path}': pad_token must be a string or an object with a string 'content'."),
                };
            }
            int? max = null;
            if (doc.RootElement.TryGetProperty("model_max_length", out var m) && m.ValueKind == JsonValueKind.Number
                && m.TryGetDouble(out double d) && d >= 2 && d <= 1_000_000 && d == Math.Floor(d))
            {
                max = (int)d; // HF writes 1e30 for "no limit"; such values are ignored.
            }
            return (pad, max);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>What Python's <c>str.strip()</c> removes once white-space runs are collapsed to one space.</summary>
    private static readonly char[] StripChars = [' ', '\u001C', '\u001D', '\u001E', '\u001F'];

    /// <summary>CLIP cleanup as a Microsoft.ML.Tokenizers normalizer.</summary>
    private sealed class ClipNormalizer : Normalizer
    {
        public static readonly ClipNormalizer Instance = new();

        public override string Normalize(string original) => CleanText(original);

        public override string Normalize(ReadOnlySpan<char> original) => CleanText(original.ToString());
    }
}
