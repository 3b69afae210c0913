using AnomalySD.Data;
using AnomalySD.Native;

namespace AnomalySD.Engine;

/// <summary>Fine-tunes an <see cref="InpaintingModel"/> on the few shots of every category (one model for all). The native
/// trainer holds a reference to the model: disposing the model first is safe.</summary>
public sealed class ModelTrainer : IDisposable
{
    internal TrainerHandle Handle { get; }

    private ModelTrainer(TrainerHandle handle) => Handle = handle;

    /// <exception cref="AsdInvalidArgumentException">an option out of range (named in the message).</exception>
    public static unsafe ModelTrainer Create(InpaintingModel model, TrainerKind kind, TrainerOptions options)
    {
        fixed (double* ious = options.IouThresholds)
        {
            var native = options.ToNative(ious);
            AsdException.Check(NativeMethods.asd_trainer_create(model.Handle, kind.ToString().ToLowerInvariant(), native, out IntPtr p));
            return new ModelTrainer(AsdHandle.Wrap<TrainerHandle>(p));
        }
    }

    /// <summary>Adds the shots (RGB in [0, 1], one size), their foreground masks (null = whole image) and the
    /// category's tokenised prompt set (row-major [prompts, length]).</summary>
    public unsafe void AddCategory(string category, IReadOnlyList<RgbImage> shots, IReadOnlyList<BinaryMask>? foregrounds, long[] tokenIds, int length)
    {
        if (shots.Count == 0) throw new ArgumentException($"category '{category}' has no shots");
        if (length <= 0 || tokenIds.Length == 0 || tokenIds.Length % length != 0)
            throw new ArgumentException($"category '{category}': {tokenIds.Length} token ids is not a whole number of rows of {length}");
        int h = shots[0].Height, w = shots[0].Width;
        float[] images = ImagePacking.Signed(shots, w, h, $"category '{category}': shot");
        float[]? fg = null;
        if (foregrounds is not null)
        {
            if (foregrounds.Count != shots.Count) throw new ArgumentException($"category '{category}': {foregrounds.Count} foreground masks for {shots.Count} shots");
            fg = ImagePacking.Masks(foregrounds, w, h, $"category '{category}': foreground mask");
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
