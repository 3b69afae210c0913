using AnomalySD.Native;

namespace AnomalySD.Engine;

/// <summary>Options of a single-file Stable Diffusion checkpoint (the original LDM layout, <c>.safetensors</c> or <c>.ckpt</c>).</summary>
/// <param name="ModelConfig">A diffusers-layout folder whose <c>unet/</c>, <c>vae/</c> and <c>text_encoder/</c> hold <c>config.json</c>
/// (weights there are ignored), for files that are not a standard model; null = the architecture is read from the weights.</param>
/// <param name="PredictionType">null = epsilon (SD's inpainting models); else epsilon, v_prediction or sample.</param>
/// <param name="Tokenizer">A folder with the CLIP BPE files (<c>vocab.json</c>, <c>merges.txt</c>); null = see
/// <see cref="SingleFileCheckpoint.ResolveTokenizer"/>.</param>
public sealed record SingleFileOptions(string? ModelConfig = null, string? PredictionType = null, string? Tokenizer = null)
{
    /// <summary>The prediction types a UNet may be trained for (diffusers' scheduler <c>prediction_type</c>).</summary>
    public static readonly IReadOnlyList<string> PredictionTypes = ["epsilon", "v_prediction", "sample"];

    internal unsafe T WithNative<T>(Func<AsdSingleFileOptions, T> call)
    {
        AsdException.Check(NativeMethods.asd_single_file_options_default(out var native));
        fixed (byte* config = Utf8(ModelConfig), prediction = Utf8(PredictionType), tokenizer = Utf8(Tokenizer))
        {
            native.ModelConfig = config;
            native.PredictionType = prediction;
            native.Tokenizer = tokenizer;
            return call(native);
        }
    }

    private static byte[]? Utf8(string? s) => s is null ? null : System.Text.Encoding.UTF8.GetBytes(s + "\0");
}

/// <summary>Single-file checkpoints: recognising one, finding its tokenizer, converting it to a diffusers folder.</summary>
public static class SingleFileCheckpoint
{
    /// <summary>Environment variable naming a CLIP tokenizer folder (<c>vocab.json</c>, <c>merges.txt</c>) for single files.</summary>
    public const string TokenizerEnvironmentVariable = "ANOMALYSD_TOKENIZER";

    /// <summary>
    /// The CLIP BPE shipped beside the assemblies (<c>clip-tokenizer/</c>: <c>vocab.json</c>, <c>merges.txt</c>, 49,408 tokens,
    /// OpenAI CLIP's, MIT): the tokenizer of every SD 1.x and 2.x model, used when no other is given.
    /// </summary>
    public static string BundledTokenizer => Path.Combine(AppContext.BaseDirectory, "clip-tokenizer");

    /// <summary>True when <paramref name="model"/> names a file (a single-file checkpoint) rather than a folder or a preset.</summary>
    public static bool IsSingleFile(string model) => File.Exists(model);

    /// <summary>
    /// The CLIP tokenizer folder of a single file (a single file carries no tokenizer): <paramref name="tokenizer"/>, else
    /// <c>&lt;model-config&gt;/tokenizer</c>, else a <c>tokenizer/</c> folder beside the file, else $ANOMALYSD_TOKENIZER, else the
    /// bundled CLIP BPE (<see cref="BundledTokenizer"/>; SD 2.x pads with <c>!</c>, set from the detected version, not from the files).
    /// </summary>
    /// <exception cref="FileNotFoundException"><c>--tokenizer</c> lacks the files, or none of them holds <c>vocab.json</c> and
    /// <c>merges.txt</c> (an installation without the bundled folder).</exception>
    public static string ResolveTokenizer(string modelFile, string? tokenizer, string? modelConfig)
    {
        var candidates = new List<(string Dir, string From)>();
        if (tokenizer is not null) candidates.Add((tokenizer, "--tokenizer"));
        if (modelConfig is not null) candidates.Add((Path.Combine(modelConfig, "tokenizer"), "--model-config"));
        candidates.Add((Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelFile)) ?? ".", "tokenizer"), "beside the model file"));
        if (Environment.GetEnvironmentVariable(TokenizerEnvironmentVariable) is { Length: > 0 } env) candidates.Add((env, TokenizerEnvironmentVariable));
        candidates.Add((BundledTokenizer, "bundled"));
        foreach (var (dir, from) in candidates)
        {
            bool complete = File.Exists(Path.Combine(dir, "vocab.json")) && File.Exists(Path.Combine(dir, "merges.txt"));
            if (complete) return Path.GetFullPath(dir);
            if (from == "--tokenizer") throw new FileNotFoundException($"--tokenizer '{dir}' does not hold vocab.json and merges.txt");
        }
        throw new FileNotFoundException(
            $"'{modelFile}' is a single-file checkpoint, which carries no tokenizer: give the CLIP tokenizer files (vocab.json, merges.txt) with " +
            $"--tokenizer DIR, --model-config DIR holding tokenizer/, a tokenizer/ folder beside the file, or ${TokenizerEnvironmentVariable} " +
            $"(the bundled one, {BundledTokenizer}, is missing from this installation)");
    }

    /// <summary>Converts a single-file checkpoint to a diffusers folder (written atomically; see <c>asd_convert_single_file</c>).</summary>
    /// <exception cref="AsdInvalidArgumentException">a non-empty <paramref name="outFolder"/> that an earlier conversion did not write.</exception>
    public static void Convert(string path, string outFolder, SingleFileOptions options) =>
        options.WithNative(native =>
        {
            AsdException.Check(NativeMethods.asd_convert_single_file(path, native, outFolder));
            return 0;
        });
}
