using System.Text.Json;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Native;
using AnomalySD.Scoring;

namespace AnomalySD.Engine;

/// <summary>Options of one inpainting call (paper section 4.2), validated by the engine.</summary>
/// <param name="NumInferenceSteps">Length of the full DDIM schedule (paper: 50), &gt;= 1.</param>
/// <param name="NoiseStrength">λ in [0, 1]: the fraction of the schedule re-noised and denoised (paper: 0.4).</param>
/// <param name="BatchSize">Masks per UNet batch; 0 = chosen from the memory available.</param>
/// <param name="Seed">Mask i uses noise seeded Seed + i.</param>
/// <param name="Naive">One mask at a time with everything recomputed (the benchmark's baseline).</param>
public sealed record InpaintOptions(int NumInferenceSteps = 50, double NoiseStrength = 0.4, int BatchSize = 0, ulong Seed = 0, bool Naive = false);

/// <summary>
/// The Stable Diffusion inpainting model held by the engine: a diffusers folder, an AnomalySD checkpoint, or the
/// <c>compact</c> preset. Category conditions (averaged prompt embeddings) are set once and reused per image.
/// </summary>
public sealed class InpaintingModel : IDisposable
{
    internal ModelHandle Handle { get; }

    private InpaintingModel(ModelHandle handle) => Handle = handle;

    /// <summary>The compact preset with fresh weights. <paramref name="device"/>: "cpu", "cuda" or "cuda:N".</summary>
    public static InpaintingModel CreateCompact(ulong seed, string device = "cpu")
    {
        AsdException.Check(NativeMethods.asd_model_create_compact(seed, device, out IntPtr p));
        return new InpaintingModel(AsdHandle.Wrap<ModelHandle>(p));
    }

    /// <summary>A preset architecture with random weights: "compact" or "sd2-inpainting" (timing only).</summary>
    public static InpaintingModel CreatePreset(string name, ulong seed, string device = "cpu", AsdDtype dtype = AsdDtype.F32)
    {
        AsdException.Check(NativeMethods.asd_model_create_preset(name, seed, device, dtype, out IntPtr p));
        return new InpaintingModel(AsdHandle.Wrap<ModelHandle>(p));
    }

    /// <summary>Loads a diffusers SD inpainting folder or an AnomalySD checkpoint.</summary>
    /// <exception cref="AsdIOException">missing files.</exception>
    /// <exception cref="AsdFormatException">corrupt files or mismatched shapes (key, expected and found shape in the message).</exception>
    /// <exception cref="AsdUnsupportedException">unsupported config values, another architecture or an incompatible checkpoint version.</exception>
    public static InpaintingModel Load(string folder, string device = "cpu", AsdDtype dtype = AsdDtype.F32)
    {
        AsdException.Check(NativeMethods.asd_model_load(folder, device, dtype, out IntPtr p));
        return new InpaintingModel(AsdHandle.Wrap<ModelHandle>(p));
    }

    /// <summary>Writes an AnomalySD checkpoint (atomically). <paramref name="metadata"/> is stored and comes back in
    /// <see cref="Info"/>()["metadata"]; with <paramref name="unetTrainer"/> the optimizer state is saved for resuming.</summary>
    public void Save(string folder, JsonObject? metadata = null, ModelTrainer? unetTrainer = null)
    {
        bool added = false;
        try
        {
            IntPtr trainer = IntPtr.Zero;
            if (unetTrainer is not null)
            {
                unetTrainer.Handle.DangerousAddRef(ref added);
                trainer = unetTrainer.Handle.DangerousGetHandle();
            }
            AsdException.Check(NativeMethods.asd_model_save(Handle, folder, metadata?.ToJsonString(), trainer));
        }
        finally
        {
            if (added) unetTrainer!.Handle.DangerousRelease();
        }
    }

    /// <summary>Source, device, dtype, latent geometry, parameter counts, fingerprint, metadata and training counters.</summary>
    public unsafe JsonObject Info()
    {
        AsdException.Check(NativeMethods.asd_model_info(Handle, out byte* json));
        return JsonNode.Parse(NativeMethods.FromUtf8(json))!.AsObject();
    }

    /// <summary>Sets the condition of <paramref name="category"/> from its tokenised prompts
    /// (row-major [prompts, length] ids): the mean of their text embeddings (section 4.2).</summary>
    public unsafe void SetCategory(string category, long[] tokenIds, int length)
    {
        if (length <= 0 || tokenIds.Length == 0 || tokenIds.Length % length != 0)
            throw new ArgumentException($"category '{category}': {tokenIds.Length} token ids is not a whole number of rows of {length}");
        fixed (long* ids = tokenIds)
            AsdException.Check(NativeMethods.asd_model_set_category(Handle, category, ids, tokenIds.Length / length, length));
    }

    /// <summary>The masks per UNet batch <see cref="Inpaint"/> uses with <c>BatchSize = 0</c> for <paramref name="masks"/> masks at height x width.</summary>
    public int AutoBatchSize(int height, int width, int masks)
    {
        AsdException.Check(NativeMethods.asd_model_auto_batch_size(Handle, height, width, masks, out long batch));
        return (int)batch;
    }

    /// <summary>
    /// Inpaints <paramref name="image"/> (RGB in [0, 1]) under every mask, in one native call. Returns the inpaintings as
    /// RGB images in [0, 1], one per mask, in mask order.
    /// </summary>
    public unsafe IReadOnlyList<RgbImage> Inpaint(string category, RgbImage image, IReadOnlyList<BinaryMask> masks, InpaintOptions options)
    {
        int h = image.Height, w = image.Width;
        float[] x = PackSigned([image]), m = PackMasks(masks, h, w);
        var outData = new float[masks.Count * 3 * h * w];
        fixed (float* px = x, pm = m, po = outData)
            AsdException.Check(NativeMethods.asd_model_inpaint(Handle, category, px, h, w, pm, masks.Count, ToNative(options), po));
        return UnpackUnsigned(outData, masks.Count, h, w);
    }

    /// <summary>Configures the scoring backbones (prototype features and the perceptual distance).</summary>
    public void ConfigureScoring(ScoringOptions options) => AsdException.Check(NativeMethods.asd_model_set_scoring(Handle, options.ToJson()));

    /// <summary>Adds the shots of <paramref name="category"/> (and their rotations) to its prototype bank (eq. 13).</summary>
    public unsafe void AddPrototypes(string category, IReadOnlyList<RgbImage> shots)
    {
        if (shots.Count == 0) return;
        float[] data = PackSigned(shots);
        fixed (float* p = data)
            AsdException.Check(NativeMethods.asd_model_add_prototypes(Handle, category, p, shots.Count, shots[0].Height, shots[0].Width));
    }

    /// <summary>The error map E (eq. 14) of <paramref name="image"/> against the category's bank, at feature resolution.</summary>
    public unsafe Map2D ErrorMap(string category, RgbImage image)
    {
        float[] x = PackSigned([image]);
        fixed (float* px = x)
        {
            AsdException.Check(NativeMethods.asd_model_error_map(Handle, category, px, image.Height, image.Width, null, 0, out long h, out long w));
            var map = new float[h * w];
            fixed (float* pm = map)
                AsdException.Check(NativeMethods.asd_model_error_map(Handle, category, px, image.Height, image.Width, pm, map.Length, out _, out _));
            return new Map2D((int)h, (int)w, Array.ConvertAll(map, v => (double)v));
        }
    }

    /// <summary>Inpaints <paramref name="image"/> under every mask and returns the distance maps D(x, x̂_i)
    /// (eq. 16-17, image size) and, if asked, the inpaintings (RGB in [0, 1]). One native call.</summary>
    public unsafe (Map2D[] Distances, RgbImage[]? Inpaintings) InpaintDistances(string category, RgbImage image, IReadOnlyList<BinaryMask> masks,
                                                                             InpaintOptions options, bool returnInpaintings = false)
    {
        int h = image.Height, w = image.Width, plane = h * w;
        float[] x = PackSigned([image]), m = PackMasks(masks, h, w);
        var dist = new float[masks.Count * plane];
        float[]? images = returnInpaintings ? new float[masks.Count * 3 * plane] : null;
        fixed (float* px = x, pm = m, pd = dist, pi = images)
            AsdException.Check(NativeMethods.asd_model_inpaint_distances(Handle, category, px, h, w, pm, masks.Count, ToNative(options), pd, pi));
        var maps = Enumerable.Range(0, masks.Count).Select(k => new Map2D(h, w, Array.ConvertAll(dist[(k * plane)..((k + 1) * plane)], v => (double)v))).ToArray();
        return (maps, images is null ? null : UnpackUnsigned(images, masks.Count, h, w));
    }

    /// <summary>D(x, y_i) (eq. 16-17) between <paramref name="image"/> and each of <paramref name="others"/> (RGB in [0, 1], same size).</summary>
    public unsafe Map2D[] DistanceMaps(RgbImage image, IReadOnlyList<RgbImage> others)
    {
        int h = image.Height, w = image.Width, plane = h * w;
        float[] x = PackSigned([image]), y = PackSigned(others);
        var outMaps = new float[others.Count * plane];
        fixed (float* px = x, py = y, po = outMaps)
            AsdException.Check(NativeMethods.asd_model_distance_maps(Handle, px, h, w, py, others.Count, po));
        return Enumerable.Range(0, others.Count).Select(k => new Map2D(h, w, Array.ConvertAll(outMaps[(k * plane)..((k + 1) * plane)], v => (double)v))).ToArray();
    }

    /// <summary>Rows (prototypes) in the bank of <paramref name="category"/>; 0 if it has none.</summary>
    public long PrototypeRows(string category)
    {
        AsdException.Check(NativeMethods.asd_model_prototype_rows(Handle, category, out long rows));
        return rows;
    }

    /// <summary>Saves the prototype banks (safetensors, atomic) / replaces them from a file.</summary>
    public void SavePrototypes(string path) => AsdException.Check(NativeMethods.asd_model_save_prototypes(Handle, path));
    public void LoadPrototypes(string path) => AsdException.Check(NativeMethods.asd_model_load_prototypes(Handle, path));

    private static AsdInpaintOptions ToNative(InpaintOptions o) => new()
    {
        NumInferenceSteps = o.NumInferenceSteps, NoiseStrength = o.NoiseStrength, BatchSize = o.BatchSize, Seed = o.Seed, Naive = o.Naive ? 1 : 0,
    };

    /// <summary>Masks packed as [N, H, W] floats (1 = inpaint); every mask must be <paramref name="w"/> x <paramref name="h"/>.</summary>
    private static float[] PackMasks(IReadOnlyList<BinaryMask> masks, int h, int w)
    {
        var m = new float[masks.Count * h * w];
        for (int k = 0; k < masks.Count; k++)
        {
            if (masks[k].Width != w || masks[k].Height != h)
                throw new ArgumentException($"mask {k} is {masks[k].Width}x{masks[k].Height}, the image is {w}x{h}");
            for (int i = 0; i < h * w; i++) m[k * h * w + i] = masks[k].Data[i];
        }
        return m;
    }

    /// <summary>[N, 3, H, W] in [-1, 1] -> N images in [0, 1].</summary>
    private static RgbImage[] UnpackUnsigned(float[] data, int n, int h, int w)
    {
        int size = 3 * h * w;
        var result = new RgbImage[n];
        for (int k = 0; k < n; k++)
        {
            var d = new float[size];
            for (int i = 0; i < size; i++) d[i] = (data[k * size + i] + 1f) * 0.5f;
            result[k] = new RgbImage(w, h, d);
        }
        return result;
    }

    /// <summary>Images in [0, 1] packed as [N, 3, H, W] in [-1, 1].</summary>
    private static float[] PackSigned(IReadOnlyList<RgbImage> images)
    {
        int size = images[0].Data.Length;
        var data = new float[images.Count * size];
        for (int k = 0; k < images.Count; k++)
        {
            if (images[k].Data.Length != size) throw new ArgumentException("images differ in size");
            for (int i = 0; i < size; i++) data[k * size + i] = images[k].Data[i] * 2f - 1f;
        }
        return data;
    }

    public void Dispose() => Handle.Dispose();
}

/// <summary>The perceptual distance of eq. 16-17.</summary>
public enum DistanceKind
{
    /// <summary>The offline default: the LPIPS formula on the ImageNet ResNet18's layer1-3 with uniform channel weights.</summary>
    Resnet18Uniform,
    /// <summary>LPIPS v0.1 with AlexNet (the paper's): needs torchvision AlexNet weights and the LPIPS linear weights.</summary>
    LpipsAlex,
}

/// <summary>Scoring backbones. <paramref name="ResNet18Path"/>: torchvision-named ResNet18 safetensors (the build writes
/// resnet18_imagenet.safetensors next to the native library).</summary>
public sealed record ScoringOptions(string ResNet18Path, DistanceKind Distance = DistanceKind.Resnet18Uniform, string? AlexNetPath = null,
                                    string? LpipsPath = null, int[]? Rotations = null)
{
    public string DistanceName => Distance == DistanceKind.LpipsAlex ? "lpips_alex" : "resnet18_uniform";

    public string ToJson()
    {
        var o = new Dictionary<string, object> { ["resnet18"] = ResNet18Path, ["distance"] = DistanceName };
        if (AlexNetPath is not null) o["alexnet"] = AlexNetPath;
        if (LpipsPath is not null) o["lpips"] = LpipsPath;
        if (Rotations is not null) o["rotations"] = Rotations;
        return JsonSerializer.Serialize(o);
    }

    /// <summary>The ImageNet ResNet18 converted by the build: ANOMALYSD_RESNET18 if set, else
    /// resnet18_imagenet.safetensors beside the native library, else in build/native/native/ of the source tree the
    /// binaries were built in; null if none exists.</summary>
    public static string? DefaultResNet18Path()
    {
        const string file = "resnet18_imagenet.safetensors";
        string? env = Environment.GetEnvironmentVariable("ANOMALYSD_RESNET18");
        if (!string.IsNullOrEmpty(env)) return env;
        foreach (string candidate in NativeLibraryResolver.Candidates())
        {
            string path = Path.Combine(Path.GetDirectoryName(candidate)!, file);
            if (File.Exists(path)) return path;
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string path = Path.Combine(dir.FullName, "build", "native", "native", file);
            if (File.Exists(path)) return path;
        }
        return null;
    }
}

/// <summary>What a <see cref="ModelTrainer"/> trains.</summary>
public enum TrainerKind
{
    /// <summary>The denoising UNet (eq. 7-8).</summary>
    Unet,
    /// <summary>The VAE decoder (eq. 9-10).</summary>
    Decoder,
    /// <summary>Encoder and decoder from scratch (compact preset only).</summary>
    Autoencoder,
}

/// <summary>Training precision of the forward passes; weights stay fp32 (the model must be F32).</summary>
public enum MixedPrecisionMode
{
    /// <summary>Everything in the model dtype (the paper's setting).</summary>
    No,
    /// <summary>Autocast to bfloat16 (CPU or CUDA); no loss scaling needed.</summary>
    Bf16,
    /// <summary>Autocast to float16 with dynamic loss scaling (CUDA only).</summary>
    Fp16,
}

/// <summary>Fine-tuning options (section 5.1 defaults).</summary>
public sealed record TrainerOptions(int BatchSize = 8, int GradientAccumulation = 1, double LearningRate = 1e-4, ulong Seed = 0, double Beta = 0.1,
                                    double[]? IouThresholds = null, MixedPrecisionMode MixedPrecision = MixedPrecisionMode.No)
{
    public string ToJson() => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["batch_size"] = BatchSize, ["gradient_accumulation"] = GradientAccumulation, ["learning_rate"] = LearningRate,
        ["seed"] = Seed, ["beta"] = Beta, ["iou_thresholds"] = IouThresholds ?? [0.0, 0.2, 0.5],
        ["mixed_precision"] = MixedPrecision.ToString().ToLowerInvariant(),
    });
}

/// <summary>Fine-tunes an <see cref="InpaintingModel"/> on the few shots of every category (one model for all).</summary>
public sealed class ModelTrainer : IDisposable
{
    internal TrainerHandle Handle { get; }
    private readonly InpaintingModel _model; // kept alive: the native trainer points at it

    private ModelTrainer(TrainerHandle handle, InpaintingModel model) { Handle = handle; _model = model; }

    public static ModelTrainer Create(InpaintingModel model, TrainerKind kind, TrainerOptions options)
    {
        AsdException.Check(NativeMethods.asd_trainer_create(model.Handle, kind.ToString().ToLowerInvariant(), options.ToJson(), out IntPtr p));
        return new ModelTrainer(AsdHandle.Wrap<TrainerHandle>(p), model);
    }

    /// <summary>Adds the shots (RGB in [0, 1], one size), their foreground masks (null = whole image) and the
    /// category's tokenised prompt set (row-major [prompts, length]).</summary>
    public unsafe void AddCategory(string category, IReadOnlyList<RgbImage> shots, IReadOnlyList<BinaryMask>? foregrounds, long[] tokenIds, int length)
    {
        if (shots.Count == 0) throw new ArgumentException($"category '{category}' has no shots");
        int h = shots[0].Height, w = shots[0].Width, plane = h * w;
        var images = new float[shots.Count * 3 * plane];
        for (int k = 0; k < shots.Count; k++)
        {
            if (shots[k].Width != w || shots[k].Height != h) throw new ArgumentException($"category '{category}': shots differ in size");
            for (int i = 0; i < 3 * plane; i++) images[k * 3 * plane + i] = shots[k].Data[i] * 2f - 1f;
        }
        float[]? fg = null;
        if (foregrounds is not null)
        {
            fg = new float[shots.Count * plane];
            for (int k = 0; k < shots.Count; k++)
                for (int i = 0; i < plane; i++) fg[k * plane + i] = foregrounds[k].Data[i];
        }
        fixed (float* pi = images, pf = fg)
        fixed (long* ids = tokenIds)
            AsdException.Check(NativeMethods.asd_trainer_add_category(Handle, category, pi, pf, shots.Count, h, w, ids, tokenIds.Length / length, length));
    }

    /// <summary>Runs <paramref name="steps"/> optimizer steps; returns their mean loss.</summary>
    public double Run(int steps)
    {
        AsdException.Check(NativeMethods.asd_trainer_run(Handle, steps, out double loss));
        return loss;
    }

    /// <summary>Continues from the optimizer state and step count saved in a checkpoint (UNet trainers).</summary>
    public void Resume(string checkpointFolder) => AsdException.Check(NativeMethods.asd_trainer_resume(Handle, checkpointFolder));

    public long Steps
    {
        get
        {
            AsdException.Check(NativeMethods.asd_trainer_steps(Handle, out long s));
            return s;
        }
    }

    public void Dispose() => Handle.Dispose();
}
