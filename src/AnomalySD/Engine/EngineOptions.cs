using AnomalySD.Native;

namespace AnomalySD.Engine;

/// <summary>Options of one inpainting call (paper section 4.2), validated by the engine.</summary>
/// <param name="NumInferenceSteps">Length of the full DDIM schedule (paper: 50), &gt;= 1.</param>
/// <param name="NoiseStrength">λ in [0, 1]: the fraction of the schedule re-noised and denoised (paper: 0.4);
/// int(NumInferenceSteps · λ) must be &gt;= 1. λ = 1 starts from pure noise.</param>
/// <param name="BatchSize">Masks per UNet batch; 0 = chosen from the memory available.</param>
/// <param name="Seed">Mask i uses noise seeded Seed + i.</param>
/// <param name="Naive">One mask at a time with everything recomputed (the benchmark's baseline).</param>
/// <param name="WindowContext">Inpainting windows: the context margin on each side of a mask's bounding box, as a fraction
/// of the box side (&gt;= 0); each window is resampled to <paramref name="InpaintSize"/>, inpainted and pasted back inside the
/// mask only. null = <c>full</c>: the whole image, nothing pasted (the paper's behaviour).</param>
/// <param name="InpaintSize">Side the model inpaints at (the inpainting resolution); 0 = the image's own size (full only).</param>
/// <param name="DistanceAtInpaintSize">Compute D of each window at the inpainting resolution (crop and output both at P, then
/// resampled to the window) instead of at the analysis resolution.</param>
public sealed record InpaintOptions(int NumInferenceSteps = 50, double NoiseStrength = 0.4, int BatchSize = 0, ulong Seed = 0, bool Naive = false,
                                    double? WindowContext = null, int InpaintSize = 0, bool DistanceAtInpaintSize = false)
{
    /// <summary>The native struct, filled from the engine's defaults (<c>asd_inpaint_options_default</c>) and then set field by field,
    /// so that a field added to the C struct keeps its native default.</summary>
    internal AsdInpaintOptions ToNative()
    {
        AsdException.Check(NativeMethods.asd_inpaint_options_default(out var native));
        native.NumInferenceSteps = NumInferenceSteps;
        native.NoiseStrength = NoiseStrength;
        native.BatchSize = BatchSize;
        native.Seed = Seed;
        native.Naive = Naive ? 1 : 0;
        native.WindowContext = WindowContext ?? -1.0;
        native.InpaintSize = InpaintSize;
        native.DistanceAtInpaintSize = DistanceAtInpaintSize ? 1 : 0;
        return native;
    }
}

/// <summary>The perceptual distance of eq. 16-17.</summary>
public enum DistanceKind
{
    /// <summary>The offline default: the LPIPS formula on the ImageNet ResNet18's layer1-3 with uniform channel weights.</summary>
    Resnet18Uniform = 0,
    /// <summary>LPIPS v0.1 with AlexNet (the paper's): needs torchvision AlexNet weights and the LPIPS linear weights.</summary>
    LpipsAlex = 1,
}

/// <summary>Scoring backbones. <paramref name="ResNet18Path"/>: torchvision-named ResNet18 safetensors (the build writes
/// resnet18_imagenet.safetensors next to the native library).</summary>
/// <param name="Rotations">Eq. 13's augmentation angles (multiples of 90); null = 0, 90, 180, 270.</param>
/// <param name="FeatureAggregation">PatchCore's local aggregation of the prototype features (k x k average, odd k; 1 = off).</param>
/// <param name="HorizontalFlip">New banks also take each rotation of the horizontally flipped shot.</param>
public sealed record ScoringOptions(string ResNet18Path, DistanceKind Distance = DistanceKind.Resnet18Uniform, string? AlexNetPath = null,
                                    string? LpipsPath = null, int[]? Rotations = null, int FeatureAggregation = 1, bool HorizontalFlip = false)
{
    public string DistanceName => Distance == DistanceKind.LpipsAlex ? "lpips_alex" : "resnet18_uniform";

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

/// <summary>Training precision of the forward passes; weights stay fp32 (the model must be F32). Values are <c>asd_mixed_precision</c>.</summary>
public enum MixedPrecisionMode
{
    /// <summary>Everything in the model dtype (the paper's setting).</summary>
    No = 0,
    /// <summary>Autocast to bfloat16 (CPU or CUDA); no loss scaling needed.</summary>
    Bf16 = 1,
    /// <summary>Autocast to float16 with dynamic loss scaling (CUDA only).</summary>
    Fp16 = 2,
}

/// <summary>Fine-tuning options (section 5.1 defaults).</summary>
/// <param name="IouThresholds">γ candidates of the training masks; null = 0, 0.2, 0.5.</param>
/// <param name="WindowContext">Windows as in <see cref="InpaintOptions"/>: each training mask gets the window inference would
/// give it, resampled to <paramref name="InpaintSize"/>; null = full image.</param>
/// <param name="InpaintSize">The inpainting resolution the shots (given at the analysis resolution) are resampled to; 0 = as given.</param>
public sealed record TrainerOptions(int BatchSize = 8, int GradientAccumulation = 1, double LearningRate = 1e-4, ulong Seed = 0, double Beta = 0.1,
                                    double[]? IouThresholds = null, MixedPrecisionMode MixedPrecision = MixedPrecisionMode.No,
                                    double? WindowContext = null, int InpaintSize = 0)
{
    /// <summary>The native struct, with the engine's augmentation defaults; <paramref name="ious"/> must stay pinned during the call.</summary>
    internal unsafe AsdTrainerOptions ToNative(double* ious)
    {
        AsdException.Check(NativeMethods.asd_trainer_options_default(out var o));
        o.BatchSize = BatchSize;
        o.GradientAccumulation = GradientAccumulation;
        o.LearningRate = LearningRate;
        o.Seed = Seed;
        o.Beta = Beta;
        o.MixedPrecision = (int)MixedPrecision;
        o.IouThresholds = IouThresholds is null ? null : ious;
        o.NumIouThresholds = IouThresholds?.Length ?? 0;
        o.WindowContext = WindowContext ?? -1.0;
        o.InpaintSize = InpaintSize;
        return o;
    }
}

/// <summary>Where the scoring backbones come from (null ResNet18 path: the build's).</summary>
public sealed record ScoringBackbones(string? ResNet18Path = null, DistanceKind Distance = DistanceKind.Resnet18Uniform, string? AlexNetPath = null,
                                      string? LpipsPath = null);

/// <summary>The dtype of a model's weights; the values are the engine's (<c>asd_dtype</c>).</summary>
public enum ModelDtype { F32 = 0, F16 = 1, BF16 = 2 }

/// <summary>Element types of tensors (<c>asd_dtype</c>); <see cref="Auto"/>: as stored.</summary>
public enum TensorDtype { Auto = -1, F32 = 0, F16 = 1, BF16 = 2, I64 = 3, F64 = 4, I32 = 5, U8 = 6, Bool = 7, I8 = 8, I16 = 9 }

/// <summary>Which exceptions are failures a user can act on (a file, a value, the engine's message) rather than bugs.</summary>
public static class Failures
{
    /// <summary>True for the engine's errors and the library's input and I/O errors: a host reports their message in one line.</summary>
    public static bool IsExpected(Exception e) => e is AsdException or DllNotFoundException or IOException or InvalidDataException
        or AnomalySD.Data.ImageLoadException or KeyNotFoundException or ArgumentException or UnauthorizedAccessException or FormatException;
}
