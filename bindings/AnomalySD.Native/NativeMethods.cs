using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

// The declarations are the library's business (as ONNX Runtime's NativeMethods): its engine facade and the tests see them.
[assembly: InternalsVisibleTo("AnomalySD.Core")]
[assembly: InternalsVisibleTo("AnomalySD.Tests")]

namespace AnomalySD.Native;

/// <summary>Status codes of <c>anomalysd.h</c> (<c>asd_status</c>); the numeric values are part of the ABI.</summary>
public enum AsdStatus
{
    Ok = 0,
    InvalidArgument = 1,
    IO = 2,
    Format = 3,
    NotFound = 4,
    Unsupported = 5,
    OutOfMemory = 6,
    Runtime = 7,
    Internal = 8,
}

/// <summary>Element types (<c>asd_dtype</c>).</summary>
internal enum AsdDtype
{
    Auto = -1,
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    I64 = 3,
    F64 = 4,
    I32 = 5,
    U8 = 6,
    Bool = 7,
    I8 = 8,
    I16 = 9,
}

/// <summary><c>asd_inpaint_options</c>: same layout as the C struct.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AsdInpaintOptions
{
    public long NumInferenceSteps;
    public double NoiseStrength;
    public long BatchSize;
    public ulong Seed;
    public int Naive;
    /// <summary>Context margin per side as a fraction of the mask's bounding-box side; &lt; 0 = full image (the paper's).</summary>
    public double WindowContext;
    /// <summary>Side the model inpaints at; 0 = the image's size (full context only).</summary>
    public long InpaintSize;
    /// <summary>1: D of a window at the inpainting resolution; 0: at the analysis resolution.</summary>
    public int DistanceAtInpaintSize;
}

/// <summary><c>asd_single_file_options</c>: same layout as the C struct (strings as NUL-terminated UTF-8 pointers, read during the call; null = default).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct AsdSingleFileOptions
{
    public byte* ModelConfig;
    public byte* PredictionType;
    public byte* Tokenizer;
}

/// <summary><c>asd_scoring_options</c>: same layout as the C struct (strings as NUL-terminated UTF-8 pointers, read during the call).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct AsdScoringOptions
{
    public byte* ResNet18;
    public int Distance;
    public byte* AlexNet;
    public byte* Lpips;
    public long* Rotations;
    public long NumRotations;
    public long FeatureAggregation;
    public int HorizontalFlip;
}

/// <summary><c>asd_error_map_options</c>: same layout as the C struct.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AsdErrorMapOptions
{
    /// <summary>&lt; 0: global nearest neighbour (eq. 14); r &gt;= 0: position-aware within r grid cells.</summary>
    public long MatchingRadius;
}

/// <summary><c>asd_mutual_options</c>: same layout as the C struct.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AsdMutualOptions
{
    public double Fraction;
    public long MaxChunkBytes;
}

/// <summary><c>asd_trainer_options</c>: same layout as the C struct.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct AsdTrainerOptions
{
    public long BatchSize;
    public long GradientAccumulation;
    public double LearningRate;
    public ulong Seed;
    public double Beta;
    public int MixedPrecision;
    public double* IouThresholds;
    public long NumIouThresholds;
    public double AugmentBrightness;
    public double AugmentContrast;
    public double AugmentScaleMin;
    public double AugmentScaleMax;
    public double AugmentRotationDegrees;
    public double WindowContext;
    public long InpaintSize;
}

/// <summary>
/// One declaration per exported function of <c>native/include/anomalysd.h</c>, same names and order.
/// Every function except <see cref="asd_last_error"/> returns an <see cref="AsdStatus"/>; call them through
/// <see cref="AsdException.Check"/>. Handles come back as raw pointers and are wrapped at once in their SafeHandle.
/// </summary>
internal static unsafe partial class NativeMethods
{
    public const string Library = "anomalysd";

    static NativeMethods() => NativeLibraryResolver.Register();

    [LibraryImport(Library)] public static partial byte* asd_last_error();
    [LibraryImport(Library)] public static partial AsdStatus asd_engine_version(out byte* version);
    [LibraryImport(Library)] public static partial AsdStatus asd_torch_version(out byte* version);
    [LibraryImport(Library)] public static partial AsdStatus asd_built_with_cuda(out int flag);
    [LibraryImport(Library)] public static partial AsdStatus asd_cuda_device_count(out int available, out int count);
    [LibraryImport(Library)] public static partial AsdStatus asd_cuda_device_name(int index, byte* buffer, nuint capacity);
    [LibraryImport(Library)] public static partial AsdStatus asd_get_num_threads(out int threads);
    [LibraryImport(Library)] public static partial AsdStatus asd_set_num_threads(int threads);
    [LibraryImport(Library)] public static partial AsdStatus asd_manual_seed(ulong seed);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_gemm_peak_gflops(string device, AsdDtype dtype, long n, out double gflops);
    [LibraryImport(Library)] public static partial AsdStatus asd_live_objects(out long count);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)] public static partial AsdStatus asd_peak_memory_reset(string device);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)] public static partial AsdStatus asd_peak_memory(string device, out long bytes);

    [LibraryImport(Library)] public static partial AsdStatus asd_tensor_map_create(out IntPtr map);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_safetensors_load(string path, AsdDtype dtype, out IntPtr map);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_safetensors_save(TensorMapHandle map, string path, string? metadataJson);
    [LibraryImport(Library)] public static partial AsdStatus asd_tensor_map_free(IntPtr map);
    [LibraryImport(Library)] public static partial AsdStatus asd_tensor_map_count(TensorMapHandle map, out long count);
    [LibraryImport(Library)] public static partial AsdStatus asd_tensor_map_name(TensorMapHandle map, long index, out byte* name);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_tensor_map_info(TensorMapHandle map, string name, out AsdDtype dtype, out int ndim, long* shape, int shapeCapacity);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_tensor_map_get_f32(TensorMapHandle map, string name, float* buffer, long count);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_tensor_map_set_f32(TensorMapHandle map, string name, float* data, long* shape, int ndim, AsdDtype dtype);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_tensor_map_set_i64(TensorMapHandle map, string name, long* data, long* shape, int ndim);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_create_compact(ulong seed, string? device, out IntPtr model);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_create_preset(string name, ulong seed, string? device, AsdDtype dtype, out IntPtr model);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_load(string folder, string? device, AsdDtype dtype, out IntPtr model);
    [LibraryImport(Library)] public static partial AsdStatus asd_single_file_options_default(out AsdSingleFileOptions options);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_load_single_file(string path, in AsdSingleFileOptions options, string? device, AsdDtype dtype, out IntPtr model);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_convert_single_file(string path, in AsdSingleFileOptions options, string outFolder);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_save_single_file(ModelHandle model, string path, int sdVersion);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_save(ModelHandle model, string folder, string? metadataJson, IntPtr unetTrainer);
    [LibraryImport(Library)] public static partial AsdStatus asd_model_info(ModelHandle model, out byte* json);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_set_category(ModelHandle model, string category, long* tokenIds, long numPrompts, long length);
    [LibraryImport(Library)] public static partial AsdStatus asd_inpaint_options_default(out AsdInpaintOptions options);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_inpaint(ModelHandle model, string category, float* image, long height, long width,
                                                      float* masks, long numMasks, in AsdInpaintOptions options, float* outImages);
    [LibraryImport(Library)]
    public static partial AsdStatus asd_model_auto_batch_size(ModelHandle model, long height, long width, long numMasks, out long batch);
    [LibraryImport(Library)] public static partial AsdStatus asd_model_unet_gflops(ModelHandle model, long height, long width, out double gflops);
    [LibraryImport(Library)] public static partial AsdStatus asd_scoring_options_default(out AsdScoringOptions options);
    [LibraryImport(Library)] public static partial AsdStatus asd_model_set_scoring(ModelHandle model, in AsdScoringOptions options);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_add_prototypes(ModelHandle model, string category, float* images, long k, long height, long width);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_set_prototypes(ModelHandle model, string category, float* images, long k, long height, long width,
                                                             long* rotations, long numRotations, int horizontalFlip);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_prototype_views(ModelHandle model, string category, long* outRotations, long capacity,
                                                              out long outCount, out int outHorizontalFlip);
    [LibraryImport(Library)] public static partial AsdStatus asd_error_map_options_default(out AsdErrorMapOptions options);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_error_map(ModelHandle model, string category, float* image, long height, long width,
                                                        in AsdErrorMapOptions options, float* outMap, long capacity, out long outHeight, out long outWidth);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_error_maps(ModelHandle model, string category, float* images, long n, long height, long width,
                                                         in AsdErrorMapOptions options, float* outMaps, long capacity);
    [LibraryImport(Library)]
    public static partial AsdStatus asd_model_prototype_features(ModelHandle model, float* images, long n, long height, long width, float* outFeatures,
                                                                 long capacity, out long outChannels, out long outHeight, out long outWidth);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_feature_error_maps(ModelHandle model, string category, float* features, long n, long channels, long fh, long fw,
                                                                 in AsdErrorMapOptions options, float* outMaps, long capacity);
    [LibraryImport(Library)] public static partial AsdStatus asd_mutual_options_default(out AsdMutualOptions options);
    [LibraryImport(Library)]
    public static partial AsdStatus asd_model_mutual_maps(ModelHandle model, float* features, long n, long channels, long fh, long fw, long* refs,
                                                          long refsPerImage, in AsdMutualOptions options, float* outMaps, long capacity);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_inpaint_distances(ModelHandle model, string category, float* image, long height, long width,
                                                                float* masks, long numMasks, in AsdInpaintOptions options,
                                                                float* outDistances, float* outImages);
    [LibraryImport(Library)]
    public static partial AsdStatus asd_model_distance_maps(ModelHandle model, float* image, long height, long width, float* others, long n, float* outMaps);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_prototype_rows(ModelHandle model, string category, out long rows);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_save_prototypes(ModelHandle model, string path);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_model_load_prototypes(ModelHandle model, string path);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_resnet18_pooled(string weightsPath, float* images, long n, long height, long width, float* outPooled);
    [LibraryImport(Library)] public static partial AsdStatus asd_model_free(IntPtr model);

    [LibraryImport(Library)] public static partial AsdStatus asd_trainer_options_default(out AsdTrainerOptions options);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_trainer_create(ModelHandle model, string kind, in AsdTrainerOptions options, out IntPtr trainer);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_trainer_add_category(TrainerHandle trainer, string category, float* images, float* foregrounds,
                                                             long k, long height, long width, long* tokenIds, long numPrompts, long length);
    [LibraryImport(Library)] public static partial AsdStatus asd_trainer_run(TrainerHandle trainer, long steps, out double meanLoss);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    public static partial AsdStatus asd_trainer_resume(TrainerHandle trainer, string folder);
    [LibraryImport(Library)] public static partial AsdStatus asd_trainer_steps(TrainerHandle trainer, out long steps);
    [LibraryImport(Library)] public static partial AsdStatus asd_trainer_free(IntPtr trainer);

    /// <summary>A NUL-terminated UTF-8 string owned by the engine, copied into a managed string.</summary>
    public static string FromUtf8(byte* s) => s == null ? string.Empty : Marshal.PtrToStringUTF8((IntPtr)s) ?? string.Empty;
}
