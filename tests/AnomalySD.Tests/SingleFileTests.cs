using System.Text.Json.Nodes;
using AnomalySD.Cli;
using AnomalySD.Engine;
using AnomalySD.Text;
using AnomalySD.Native;
using AnomalySD.Checkpoints;
using AnomalySD.Detection;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>
/// Single-file checkpoints from the host: a compact SD-architecture model written in the original (LDM) layout with the
/// project's own writer, then fit and eval end to end from that file on a slice of ../shared/data, convert to a diffusers
/// folder, and the flag checks. (The golden files, the fuzz cases and convert's tensor equality are native tests.)
/// </summary>
[Collection(NativeCollection.Name)]
public sealed class SingleFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-single-file-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A compact model as one SD 1.x-layout file, plus its configs (an AnomalySD checkpoint folder is a diffusers layout).</summary>
    private (string File, string Configs) WriteCompactSingleFile()
    {
        string configs = Path.Combine(_dir, "configs"), file = Path.Combine(_dir, "compact-sd1.safetensors");
        using var model = InpaintingModel.CreateCompact(3);
        model.Save(configs);
        model.SaveSingleFile(file, 1);
        return (file, configs);
    }

    [Fact]
    public void FitAndEvalRunFromASingleFileCheckpoint()
    {
        var (file, configs) = WriteCompactSingleFile();
        string ckpt = Path.Combine(_dir, "fitted"), tokenizer = TestPaths.Shared("golden/tokenizer_clip");
        var fit = new FitVerb
        {
            Data = TestPaths.Shared("data"), Categories = "bottle", Shots = 1, Model = file, ModelConfig = configs, Tokenizer = tokenizer,
            ImageSize = 64, AnalysisSize = 64, UnetSteps = 2, DecoderSteps = 1, BatchSize = 2, Out = ckpt, Seed = 1, Calibrate = "off",
        };
        fit.Validate();
        Assert.Equal(0, FitCommand.Run(fit));
        using (var loaded = CheckpointLoader.LoadModel(ckpt, "cpu", ModelDtype.F32))
        {
            var meta = loaded.Info()["metadata"]!.AsObject();
            Assert.Equal(Path.GetFullPath(file), meta["model_source"]!.GetValue<string>());
            Assert.Equal("clip", meta["tokenizer"]!.GetValue<string>());
            Assert.Equal(Path.GetFullPath(tokenizer), meta["tokenizer_dir"]!.GetValue<string>());
            Assert.Equal("<|endoftext|>", meta["tokenizer_pad_token"]!.GetValue<string>());
        }

        string report = Path.Combine(_dir, "report");
        var eval = new EvalVerb
        {
            Data = TestPaths.Shared("data"), Categories = "bottle", Checkpoint = ckpt, Out = report, Scales = "1", NumInferenceSteps = 10,
            MaxImages = 2, Masks = MaskStrategy.Full,
        };
        Assert.Equal(0, EvalCommand.Run(eval));
        var results = JsonNode.Parse(File.ReadAllText(Path.Combine(report, "results.json")))!.AsObject();
        var row = results["categories"]!["bottle"]!;
        Assert.Equal(2, row["images"]!.GetValue<int>());
        Assert.InRange(row["pixel_auroc"]!.GetValue<double>(), 0.0, 1.0);
    }

    [Fact]
    public void TheSingleFileHoldsTheModelsWeightsAndReportsWhatWasDetected()
    {
        var (file, configs) = WriteCompactSingleFile();
        using var fromFile = InpaintingModel.LoadSingleFile(file, new SingleFileOptions(configs));
        using var fromFolder = InpaintingModel.Load(configs);
        var a = fromFile.Info();
        var b = fromFolder.Info();
        Assert.Equal(b["architecture_fingerprint"]!.GetValue<string>(), a["architecture_fingerprint"]!.GetValue<string>());
        Assert.Equal(b["parameters"]!.ToJsonString(), a["parameters"]!.ToJsonString());
        var single = a["single_file"]!;
        Assert.Equal("SD 1.x", single["family"]!.GetValue<string>());
        Assert.StartsWith("SD 1.x inpainting, UNet 7 M parameters, fp32", single["description"]!.GetValue<string>());
        Assert.Equal("safetensors", single["format"]!.GetValue<string>());
        Assert.Equal(4, single["skipped_keys"]!.GetValue<int>()); // betas, alphas_cumprod, model_ema.decay, model_ema.num_updates
        Assert.Null(b["single_file"]);

        // The same scores for one inpainting: the file's weights are the model's.
        long[] ids = new AnomalySD.Text.HashPromptTokenizer().EncodePadded(["a photo of a bottle"]);
        fromFile.SetCategory("c", ids, 77);
        fromFolder.SetCategory("c", ids, 77);
        var image = new AnomalySD.Data.RgbImage(32, 32, Enumerable.Range(0, 3 * 32 * 32).Select(i => (i % 97) / 97f).ToArray());
        var mask = AnomalySD.Masks.MaskProposals.Grid(32, 32, [2])[0].Mask;
        var options = new InpaintOptions(10, 0.4, 0, 9);
        var x = fromFile.Inpaint("c", image, [mask], options)[0];
        var y = fromFolder.Inpaint("c", image, [mask], options)[0];
        Assert.Equal(y.Data, x.Data);
    }

    [Fact]
    public void ConvertWritesADiffusersFolderAndRefusesAForeignOne()
    {
        var (file, configs) = WriteCompactSingleFile();
        string tokenizer = TestPaths.Shared("golden/tokenizer_clip"), out1 = Path.Combine(_dir, "converted");
        var convert = new ConvertVerb { Model = file, ModelConfig = configs, Tokenizer = tokenizer, Out = out1 };
        Assert.Equal(0, ConvertCommand.Run(convert));
        foreach (string f in new[] { "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                                     "text_encoder/model.safetensors", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt" })
            Assert.True(File.Exists(Path.Combine(out1, f)), f);
        using (var converted = InpaintingModel.Load(out1))
        using (var original = InpaintingModel.Load(configs))
            Assert.Equal(original.Info()["architecture_fingerprint"]!.GetValue<string>(), converted.Info()["architecture_fingerprint"]!.GetValue<string>());
        var tok = AnomalySD.Text.ClipTokenizer.FromFolder(Path.Combine(out1, "tokenizer"));
        Assert.Equal(49407, tok.PadTokenId); // SD 1.x pads with <|endoftext|>

        Assert.Equal(0, ConvertCommand.Run(convert)); // its own output is replaced
        string foreign = Path.Combine(_dir, "foreign");
        Directory.CreateDirectory(foreign);
        File.WriteAllText(Path.Combine(foreign, "keep.txt"), "mine");
        var ex = Assert.Throws<AsdInvalidArgumentException>(() => ConvertCommand.Run(new ConvertVerb { Model = file, ModelConfig = configs, Tokenizer = tokenizer, Out = foreign }));
        Assert.Contains("not a folder written by convert", ex.Message);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(foreign, "keep.txt")));
        Assert.DoesNotContain(Directory.GetFileSystemEntries(_dir), e => Path.GetFileName(e).Contains(".staging-"));
    }

    [Fact]
    public void SingleFileFlagsAreCheckedBeforeAnyWork()
    {
        var (file, configs) = WriteCompactSingleFile();
        var folderWithConfig = new FitVerb { Data = _dir, Model = configs, ModelConfig = configs, Out = Path.Combine(_dir, "x") };
        Assert.Contains("apply to single-file checkpoints", Assert.Throws<ArgumentException>(folderWithConfig.Validate).Message);
        var badPrediction = new FitVerb { Data = _dir, Model = file, PredictionType = "noise", Out = Path.Combine(_dir, "x") };
        Assert.Contains("--prediction-type 'noise'", Assert.Throws<ArgumentException>(badPrediction.Validate).Message);
        Assert.Contains("is a folder", Assert.Throws<ArgumentException>(new ConvertVerb { Model = configs, Out = Path.Combine(_dir, "y") }.Validate).Message);
        // No tokenizer given anywhere: the bundled CLIP BPE, byte for byte the golden tokenizer files (which
        // ClipTokenizerTests check against the reference ids of SD 1.x and 2.x).
        string lone = Path.Combine(_dir, "lone");
        Directory.CreateDirectory(lone);
        string moved = Path.Combine(lone, "m.safetensors");
        File.Copy(file, moved);
        string? saved = Environment.GetEnvironmentVariable(SingleFileCheckpoint.TokenizerEnvironmentVariable);
        Environment.SetEnvironmentVariable(SingleFileCheckpoint.TokenizerEnvironmentVariable, null);
        try
        {
            string bundled = SingleFileCheckpoint.ResolveTokenizer(moved, null, null);
            Assert.Equal(Path.GetFullPath(SingleFileCheckpoint.BundledTokenizer), bundled);
            foreach (string name in new[] { "vocab.json", "merges.txt" })
                Assert.Equal(File.ReadAllBytes(TestPaths.Shared(Path.Combine("golden", "tokenizer_clip", name))), File.ReadAllBytes(Path.Combine(bundled, name)));
            Assert.Equal(49408, ClipTokenizer.FromFolder(bundled).VocabSize);
            // An explicit --tokenizer without the files is refused, not replaced by the bundled one.
            var e = Assert.Throws<FileNotFoundException>(() => SingleFileCheckpoint.ResolveTokenizer(moved, lone, null));
            Assert.Contains("does not hold vocab.json and merges.txt", e.Message);
        }
        finally { Environment.SetEnvironmentVariable(SingleFileCheckpoint.TokenizerEnvironmentVariable, saved); }
        // A refused pickle from the host: the typed exception and the global's name.
        string evil = Path.Combine(_dir, "evil.ckpt");
        File.WriteAllBytes(evil, EvilCheckpoint());
        var refused = Assert.Throws<AsdUnsupportedException>(() => InpaintingModel.Load(evil));
        Assert.Contains("'os.system'", refused.Message);
    }

    /// <summary>A zip checkpoint whose pickle calls os.system (stored entries, no CRC: the reader does not need one).</summary>
    private static byte[] EvilCheckpoint()
    {
        var pickle = new List<byte> { 0x80, 2, (byte)'c' };
        pickle.AddRange("os\nsystem\n"u8.ToArray());
        pickle.Add((byte)'X');
        byte[] cmd = "touch /tmp/asd-pwned-host"u8.ToArray();
        pickle.AddRange(BitConverter.GetBytes(cmd.Length));
        pickle.AddRange(cmd);
        pickle.AddRange(new byte[] { 0x85, (byte)'R', (byte)'.' });
        using var ms = new MemoryStream();
        using (var zip = new System.IO.Compression.ZipArchive(ms, System.IO.Compression.ZipArchiveMode.Create, leaveOpen: true))
        {
            var entry = zip.CreateEntry("archive/data.pkl", System.IO.Compression.CompressionLevel.NoCompression);
            using var s = entry.Open();
            s.Write(pickle.ToArray());
        }
        return ms.ToArray();
    }
}
