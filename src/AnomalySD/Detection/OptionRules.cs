using System.Globalization;

namespace AnomalySD.Detection;

/// <summary>
/// The rules of the options that flags and checkpoints share, in one place: each returns null when the value is valid, or the
/// problem ("must be a multiple of 32 from 64 to 2048, got -1"). A flag's check prefixes it with the flag's name, a
/// checkpoint's with the file and key (<see cref="JsonInput.Checked{T}"/>), so both say the same thing.
/// </summary>
public static class OptionRules
{
    /// <summary>Largest inpainting and analysis resolution, in pixels a side (SD runs at 512; 2048 is 16× its work).</summary>
    public const int MaxResolution = 2048;

    /// <summary>Largest evaluation resolution, in pixels a side (0 = each image's original size).</summary>
    public const int MaxEvalSize = 8192;

    /// <summary>Largest PatchCore aggregation neighbourhood (k × k feature cells).</summary>
    public const int MaxFeatureAggregation = 15;

    /// <summary>Inpainting resolution P (a resolved value; the flag's 0 means the model's default).</summary>
    public static string? InpaintSize(long v) =>
        v >= 32 && v <= MaxResolution && v % 32 == 0 ? null : $"must be a multiple of 32 from 32 to {MaxResolution}, got {v}";

    /// <summary>Analysis resolution A.</summary>
    public static string? AnalysisSize(long v) =>
        v >= 64 && v <= MaxResolution && v % 32 == 0 ? null : $"must be a multiple of 32 from 64 to {MaxResolution}, got {v}";

    /// <summary>Evaluation resolution (0 = original size).</summary>
    public static string? EvalSize(long v) => v >= 0 && v <= MaxEvalSize ? null : $"must be from 0 (original size) to {MaxEvalSize}, got {v}";

    /// <summary>PatchCore local aggregation k (odd; 1 = off).</summary>
    public static string? FeatureAggregation(long v) =>
        v >= 1 && v <= MaxFeatureAggregation && v % 2 == 1 ? null : $"must be odd, from 1 (off) to {MaxFeatureAggregation} (3 = PatchCore), got {v}";

    /// <summary>Noise strength λ (eq. 11), a fraction of the schedule.</summary>
    public static string? NoiseStrength(double v) => v >= 0 && v <= 1 ? null : $"must be in [0, 1], got {v.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Shots per category (0 = zero-shot).</summary>
    public static string? Shots(long v) => v >= 0 ? null : $"must be >= 0, got {v}";

    /// <summary>Inference steps of the DDIM schedule.</summary>
    public static string? NumInferenceSteps(long v) => v >= 1 && v <= 1000 ? null : $"must be from 1 to 1000, got {v}";

    /// <summary>A λ of a schedule must leave at least one denoising step (diffusers refuses it too); the problem reads after
    /// "noise strength λ".</summary>
    public static string? DenoisingSteps(double lambda, int steps) => (int)(steps * lambda) >= 1 ? null
        : $"of {steps} inference steps leaves 0 denoising steps; use a noise strength >= {(1.0 / steps).ToString("G4", CultureInfo.InvariantCulture)} or more steps";
}
