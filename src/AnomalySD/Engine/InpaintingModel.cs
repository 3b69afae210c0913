using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Native;
using AnomalySD.Scoring;

namespace AnomalySD.Engine;

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
    public static InpaintingModel CreatePreset(string name, ulong seed, string device = "cpu", ModelDtype dtype = ModelDtype.F32)
    {
        AsdException.Check(NativeMethods.asd_model_create_preset(name, seed, device, (AsdDtype)dtype, out IntPtr p));
        return new InpaintingModel(AsdHandle.Wrap<ModelHandle>(p));
    }

    /// <summary>Loads a diffusers SD inpainting folder, an AnomalySD checkpoint or a single-file checkpoint (default options).</summary>
    /// <exception cref="AsdIOException">missing files.</exception>
    /// <exception cref="AsdFormatException">corrupt files or mismatched shapes (key, expected and found shape in the message).</exception>
    /// <exception cref="AsdUnsupportedException">unsupported config values, another architecture or an incompatible checkpoint version.</exception>
    public static InpaintingModel Load(string folder, string device = "cpu", ModelDtype dtype = ModelDtype.F32)
    {
        AsdException.Check(NativeMethods.asd_model_load(folder, device, (AsdDtype)dtype, out IntPtr p));
        return new InpaintingModel(AsdHandle.Wrap<ModelHandle>(p));
    }

    /// <summary>Loads a single-file SD checkpoint (original layout, <c>.safetensors</c> or <c>.ckpt</c> through a restricted unpickler):
    /// memory-mapped, each weight copied once into <paramref name="dtype"/> (null = the file's). <see cref="Info"/>()["single_file"]
    /// says what was detected.</summary>
    /// <exception cref="AsdNotFoundException">a missing weight (its key in the message).</exception>
    /// <exception cref="AsdFormatException">a mis-shaped weight or a malformed file.</exception>
    /// <exception cref="AsdUnsupportedException">a refused pickle global, a compressed entry, a legacy .ckpt, a non-inpainting UNet.</exception>
    public static InpaintingModel LoadSingleFile(string path, SingleFileOptions? options = null, string device = "cpu", ModelDtype? dtype = ModelDtype.F32)
    {
        var native = dtype is ModelDtype d ? (AsdDtype)d : AsdDtype.Auto;
        IntPtr p = (options ?? new SingleFileOptions()).WithNative(o =>
        {
            AsdException.Check(NativeMethods.asd_model_load_single_file(path, o, device, native, out IntPtr model));
            return model;
        });
        return new InpaintingModel(AsdHandle.Wrap<ModelHandle>(p));
    }

    /// <summary>Writes the UNet, VAE and text encoder as one original-layout single file (safetensors; <paramref name="sdVersion"/> 1 or 2
    /// picks the text encoder's names), for tests and benchmarks.</summary>
    public void SaveSingleFile(string path, int sdVersion) => AsdException.Check(NativeMethods.asd_model_save_single_file(Handle, path, sdVersion));

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
        float[] x = ImagePacking.Signed([image], w, h), m = ImagePacking.Masks(masks, w, h);
        var outData = new float[masks.Count * 3 * h * w];
        var native = options.ToNative();
        fixed (float* px = x, pm = m, po = outData)
            AsdException.Check(NativeMethods.asd_model_inpaint(Handle, category, px, h, w, pm, masks.Count, native, po));
        return ImagePacking.Unsigned(outData, masks.Count, h, w);
    }

    /// <summary>GFLOP of one UNet forward of one sample at <paramref name="height"/> x <paramref name="width"/> pixels, counted from the
    /// architecture (convolutions, linear layers, attention products; 2 FLOPs per multiply-add).</summary>
    public double UnetGflops(int height, int width)
    {
        AsdException.Check(NativeMethods.asd_model_unet_gflops(Handle, height, width, out double g));
        return g;
    }

    /// <summary>Configures the scoring backbones (prototype features and the perceptual distance).</summary>
    /// <exception cref="AsdIOException">a weight file cannot be read.</exception>
    public unsafe void ConfigureScoring(ScoringOptions options)
    {
        AsdException.Check(NativeMethods.asd_scoring_options_default(out var native));
        long[]? rotations = options.Rotations?.Select(r => (long)r).ToArray();
        fixed (byte* resnet = Utf8(options.ResNet18Path), alex = Utf8(options.AlexNetPath), lpips = Utf8(options.LpipsPath))
        fixed (long* rot = rotations)
        {
            native.ResNet18 = resnet;
            native.Distance = (int)options.Distance;
            native.AlexNet = alex;
            native.Lpips = lpips;
            native.Rotations = rot;
            native.NumRotations = rotations?.Length ?? 0;
            native.FeatureAggregation = options.FeatureAggregation;
            native.HorizontalFlip = options.HorizontalFlip ? 1 : 0;
            AsdException.Check(NativeMethods.asd_model_set_scoring(Handle, native));
        }
    }

    private static byte[]? Utf8(string? s) => s is null ? null : System.Text.Encoding.UTF8.GetBytes(s + "\0");

    /// <summary>Adds the shots of <paramref name="category"/> (and their rotations) to its prototype bank (eq. 13).</summary>
    public unsafe void AddPrototypes(string category, IReadOnlyList<RgbImage> shots)
    {
        if (shots.Count == 0) return;
        float[] data = ImagePacking.Signed(shots, shots[0].Width, shots[0].Height, "shot");
        fixed (float* p = data)
            AsdException.Check(NativeMethods.asd_model_add_prototypes(Handle, category, p, shots.Count, shots[0].Height, shots[0].Width));
    }

    /// <summary>Replaces the bank of <paramref name="category"/> by <paramref name="shots"/> (RGB in [0, 1], one size) under
    /// <paramref name="views"/>; other categories are unchanged. A failure leaves the category's bank as it was.</summary>
    public unsafe void SetPrototypes(string category, IReadOnlyList<RgbImage> shots, BankViews views)
    {
        if (shots.Count == 0) throw new ArgumentException($"category '{category}': a bank needs at least one shot");
        float[] data = ImagePacking.Signed(shots, shots[0].Width, shots[0].Height, "shot");
        long[] angles = views.Rotations.Select(r => (long)r).ToArray();
        fixed (float* p = data)
        fixed (long* a = angles)
            AsdException.Check(NativeMethods.asd_model_set_prototypes(Handle, category, p, shots.Count, shots[0].Height, shots[0].Width, a, angles.Length,
                                                                       views.HorizontalFlip ? 1 : 0));
    }

    /// <summary>The views the bank of <paramref name="category"/> was made with.</summary>
    /// <exception cref="AsdNotFoundException">the category has no bank.</exception>
    public unsafe BankViews PrototypeViews(string category)
    {
        AsdException.Check(NativeMethods.asd_model_prototype_views(Handle, category, null, 0, out long count, out int flip));
        var angles = new long[count];
        fixed (long* a = angles)
            AsdException.Check(NativeMethods.asd_model_prototype_views(Handle, category, a, count, out _, out _));
        return new BankViews(angles.Select(v => (int)v).ToArray(), flip == 1);
    }

    private static AsdErrorMapOptions MapOptions(PatchMatching? matching)
    {
        AsdException.Check(NativeMethods.asd_error_map_options_default(out var o));
        if (matching is not null) o.MatchingRadius = matching.NativeRadius;
        return o;
    }

    /// <summary>The error map E (eq. 14) of <paramref name="image"/> against the category's bank, at feature resolution
    /// (ceil(H/8) x ceil(W/8)), with <paramref name="matching"/> (null: global). One search: the size comes from a query that
    /// computes nothing.</summary>
    public unsafe Map2D ErrorMap(string category, RgbImage image, PatchMatching? matching = null)
    {
        float[] x = ImagePacking.Signed([image], image.Width, image.Height);
        var o = MapOptions(matching);
        AsdException.Check(NativeMethods.asd_model_error_map(Handle, category, null, image.Height, image.Width, o, null, 0, out long h, out long w));
        var map = new float[h * w];
        fixed (float* px = x, pm = map)
            AsdException.Check(NativeMethods.asd_model_error_map(Handle, category, px, image.Height, image.Width, o, pm, map.Length, out _, out _));
        return ImagePacking.Maps(map, 1, (int)h, (int)w)[0];
    }

    /// <summary>The error maps E (eq. 14) of several images of one size against the bank of <paramref name="category"/>, in one native
    /// call (the backbone runs once on the batch): each the map <see cref="ErrorMap"/> gives it alone.</summary>
    public unsafe Map2D[] ErrorMaps(string category, IReadOnlyList<RgbImage> images, PatchMatching? matching = null)
    {
        if (images.Count == 0) return [];
        int width = images[0].Width, height = images[0].Height;
        if (images.Any(i => i.Width != width || i.Height != height)) throw new ArgumentException("a batch of error maps needs images of one size");
        float[] x = ImagePacking.Signed(images, width, height);
        int fh = (height + 7) / 8, fw = (width + 7) / 8;
        var maps = new float[images.Count * fh * fw];
        var o = MapOptions(matching);
        fixed (float* px = x, pm = maps)
            AsdException.Check(NativeMethods.asd_model_error_maps(Handle, category, px, images.Count, height, width, o, pm, maps.Length));
        return ImagePacking.Maps(maps, images.Count, fh, fw);
    }

    /// <summary>The prototype features ψ (eq. 12) of images of one size (RGB in [0, 1]), <paramref name="batch"/> images per native call
    /// (bounds the backbone's activations), into one <see cref="FeatureMaps"/>.</summary>
    /// <exception cref="ArgumentException">no image, images of several sizes, or more features than one array holds.</exception>
    public unsafe FeatureMaps PrototypeFeatures(IReadOnlyList<RgbImage> images, int batch = 8)
    {
        if (images.Count == 0) throw new ArgumentException("no image to extract features from");
        int width = images[0].Width, height = images[0].Height;
        if (images.Any(i => i.Width != width || i.Height != height)) throw new ArgumentException("prototype features of a set need images of one size");
        AsdException.Check(NativeMethods.asd_model_prototype_features(Handle, null, 1, height, width, null, 0, out long c, out long fh, out long fw));
        long per = c * fh * fw, total = per * images.Count;
        if (total > Array.MaxLength)
            throw new ArgumentException($"{images.Count} images of {width}x{height} have {total} feature values, more than one array holds ({Array.MaxLength}); score fewer at once");
        var data = new float[total];
        for (int first = 0; first < images.Count; first += batch)
        {
            int n = Math.Min(batch, images.Count - first);
            float[] x = ImagePacking.Signed(images.Skip(first).Take(n).ToList(), width, height);
            fixed (float* px = x, po = &data[first * per])
                AsdException.Check(NativeMethods.asd_model_prototype_features(Handle, px, n, height, width, po, n * per, out _, out _, out _));
        }
        return new FeatureMaps(images.Count, (int)c, (int)fh, (int)fw, data);
    }

    /// <summary>The error maps E (eq. 14) of already computed features (<see cref="PrototypeFeatures"/>) against the bank of
    /// <paramref name="category"/>: the maps <see cref="ErrorMaps(string, IReadOnlyList{RgbImage}, PatchMatching?)"/> gives the images.</summary>
    public unsafe Map2D[] ErrorMaps(string category, FeatureMaps features, PatchMatching? matching = null)
    {
        var maps = new float[(long)features.Count * features.Height * features.Width];
        var o = MapOptions(matching);
        fixed (float* pf = features.Data, pm = maps)
            AsdException.Check(NativeMethods.asd_model_feature_error_maps(Handle, category, pf, features.Count, features.Channels, features.Height, features.Width,
                                                                          o, pm, maps.Length));
        return ImagePacking.Maps(maps, features.Count, features.Height, features.Width);
    }

    /// <summary>
    /// Mutual (transductive, MuSc-style) maps M of a set of images from their features: for image i and each reference j,
    /// d_j(p) = min over the patches q of j of ||ψ_i(p) − ψ_j(q)||² (the distance of E); M_i(p) = the mean of the smallest
    /// max(1, ⌊<paramref name="fraction"/>·K⌋) of the K values d_j(p). Feature resolution, squared feature units.
    /// </summary>
    /// <param name="references">Row i: the indices of image i's K references (distinct, other images; every row the same length);
    /// null: every other image.</param>
    /// <exception cref="ArgumentException">fewer than 2 images, or a reference table of the wrong shape (the engine names the problem).</exception>
    public unsafe Map2D[] MutualMaps(FeatureMaps features, IReadOnlyList<IReadOnlyList<int>>? references = null, double fraction = 0.3)
    {
        if (features.Count < 2) throw new ArgumentException("mutual maps need at least 2 images");
        long[]? refs = null;
        int k = 0;
        if (references is not null)
        {
            if (references.Count != features.Count) throw new ArgumentException($"{features.Count} images but {references.Count} reference rows");
            k = references[0].Count;
            if (references.Any(r => r.Count != k)) throw new ArgumentException("every image needs the same number of references");
            refs = references.SelectMany(r => r.Select(j => (long)j)).ToArray();
        }
        AsdException.Check(NativeMethods.asd_mutual_options_default(out var o));
        o.Fraction = fraction;
        var maps = new float[(long)features.Count * features.Height * features.Width];
        fixed (float* pf = features.Data, pm = maps)
        fixed (long* pr = refs)
            AsdException.Check(NativeMethods.asd_model_mutual_maps(Handle, pf, features.Count, features.Channels, features.Height, features.Width, pr, k, o, pm, maps.Length));
        return ImagePacking.Maps(maps, features.Count, features.Height, features.Width);
    }

    /// <summary>Inpaints <paramref name="image"/> under every mask (each in its window, see <see cref="InpaintOptions.WindowContext"/>)
    /// and returns the distance maps D(x_w, x̂_w) (eq. 16-17, image size, 0 outside each window) and, if asked, the pasted
    /// inpaintings (RGB in [0, 1]). One native call.</summary>
    public unsafe (Map2D[] Distances, RgbImage[]? Inpaintings) InpaintDistances(string category, RgbImage image, IReadOnlyList<BinaryMask> masks,
                                                                             InpaintOptions options, bool returnInpaintings = false)
    {
        int h = image.Height, w = image.Width, plane = h * w;
        float[] x = ImagePacking.Signed([image], w, h), m = ImagePacking.Masks(masks, w, h);
        var dist = new float[masks.Count * plane];
        float[]? images = returnInpaintings ? new float[masks.Count * 3 * plane] : null;
        var native = options.ToNative();
        fixed (float* px = x, pm = m, pd = dist, pi = images)
            AsdException.Check(NativeMethods.asd_model_inpaint_distances(Handle, category, px, h, w, pm, masks.Count, native, pd, pi));
        return (ImagePacking.Maps(dist, masks.Count, h, w), images is null ? null : ImagePacking.Unsigned(images, masks.Count, h, w));
    }

    /// <summary>D(x, y_i) (eq. 16-17) between <paramref name="image"/> and each of <paramref name="others"/> (RGB in [0, 1], same size).</summary>
    public unsafe Map2D[] DistanceMaps(RgbImage image, IReadOnlyList<RgbImage> others)
    {
        int h = image.Height, w = image.Width, plane = h * w;
        float[] x = ImagePacking.Signed([image], w, h), y = ImagePacking.Signed(others, w, h, "other image");
        var outMaps = new float[others.Count * plane];
        fixed (float* px = x, py = y, po = outMaps)
            AsdException.Check(NativeMethods.asd_model_distance_maps(Handle, px, h, w, py, others.Count, po));
        return ImagePacking.Maps(outMaps, others.Count, h, w);
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

    public void Dispose() => Handle.Dispose();
}
