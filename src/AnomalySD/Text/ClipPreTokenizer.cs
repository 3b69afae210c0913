using System.Text;
using Microsoft.ML.Tokenizers;

namespace AnomalySD.Text;

/// <summary>
/// CLIP's pre-tokenisation pattern (OpenAI <c>simple_tokenizer.py</c>, HF <c>CLIPTokenizer.pat</c>):
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>,
/// case-insensitive, applied like <c>regex.findall</c>: at each position the first alternative that
/// matches wins; white space matches nothing and is skipped.
/// </summary>
/// <remarks>
/// Hand-written instead of a .NET <see cref="System.Text.RegularExpressions.Regex"/> because .NET's
/// <c>\p{L}</c> / <c>\p{N}</c> test UTF-16 code units, so letters and digits outside the BMP (surrogate
/// pairs) would be classed as symbols; Python's <c>regex</c> module classes them by code point, as done
/// here with <see cref="Rune"/>.
/// </remarks>
internal sealed class ClipPreTokenizer : PreTokenizer
{
    public static readonly ClipPreTokenizer Instance = new();

    private static readonly string[] Specials = [ClipTokenizer.StartOfText, ClipTokenizer.EndOfText];
    private static readonly string[] Contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Split(text.AsSpan());
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text);

    /// <summary>The (offset, length) pieces of <paramref name="text"/> in UTF-16 code units.</summary>
    internal static List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
    {
        var pieces = new List<(int, int)>();
        int i = 0;
        while (i < text.Length)
        {
            ReadOnlySpan<char> rest = text[i..];
            int fixedLen = MatchFixed(rest);
            if (fixedLen > 0)
            {
                pieces.Add((i, fixedLen));
                i += fixedLen;
                continue;
            }

            Kind kind = Classify(rest, out int width);
            switch (kind)
            {
                case Kind.Space:
                    i += width;
                    break;
                case Kind.Number:
                    pieces.Add((i, width));
                    i += width;
                    break;
                default:
                {
                    int start = i;
                    i += width;
                    while (i < text.Length && Classify(text[i..], out int w) == kind)
                    {
                        i += w;
                    }
                    pieces.Add((start, i - start));
                    break;
                }
            }
        }
        return pieces;
    }

    private static int MatchFixed(ReadOnlySpan<char> rest)
    {
        if (rest[0] == '<')
        {
            foreach (string s in Specials)
            {
                if (rest.StartsWith(s, StringComparison.OrdinalIgnoreCase))
                {
                    return s.Length;
                }
            }
        }
        else if (rest[0] == '\'')
        {
            foreach (string s in Contractions)
            {
                if (rest.StartsWith(s, StringComparison.OrdinalIgnoreCase))
                {
                    return s.Length;
                }
            }
        }
        return 0;
    }

    private enum Kind { Space, Letter, Number, Other }

    private static Kind Classify(ReadOnlySpan<char> rest, out int width)
    {
        if (Rune.DecodeFromUtf16(rest, out Rune r, out width) != System.Buffers.OperationStatus.Done)
        {
            return Kind.Other; // lone surrogate: neither letter, number nor space
        }
        if (Rune.IsWhiteSpace(r)) // `regex` module \s = Unicode White_Space
        {
            return Kind.Space;
        }
        if (Rune.IsLetter(r))
        {
            return Kind.Letter;
        }
        return Rune.IsNumber(r) ? Kind.Number : Kind.Other;
    }
}
