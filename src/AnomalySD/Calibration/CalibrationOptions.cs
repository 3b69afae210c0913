using System.Globalization;
using System.Text.Json.Nodes;
using AnomalySD.Data;
using AnomalySD.Detection;
using AnomalySD.IO;
using AnomalySD.Metrics;
using AnomalySD.Scoring;

namespace AnomalySD.Calibration;

/// <summary>Options of the calibration made at fit time from the shots alone (no test image is ever read).</summary>
/// <param name="Normals">Augmented copies of the shots per category.</param>
/// <param name="Defectives">Copies with a synthetic defect per category (exact masks).</param>
/// <param name="Lambdas">The λ grid (noise strength, eq. 11); null = <see cref="DefaultLambdas"/>.</param>
/// <param name="WeightStep">Step of the simplex grid of <see cref="FusionWeights"/> (0.1: 66 points).</param>
/// <param name="Seed">Seed of the augmentations and defects.</param>
/// <param name="Scales">Grid scales calibration scores with (null = 1, 2, 4, 8, as scoring).</param>
/// <param name="NumInferenceSteps">DDIM schedule length calibration scores with (the paper's 50, as scoring).</param>
/// <param name="Resamples">Bootstrap resamples of the one-standard-error rule (<see cref="Calibrator"/>); 0 = off, the best objective wins.</param>
/// <remarks>The defaults keep calibration within 10 minutes of a 2-core fit of two compact categories (measured: 942 s with 3 + 4
/// images and λ ∈ {0.3, 0.4, 0.5}, about 21 s per image per λ). The default grid stops at the paper's λ = 0.4 so that a calibrated
/// model never runs more denoising steps per mask than the paper's setting; pass 0.5 in <see cref="Lambdas"/> to search above it.</remarks>
public sealed record CalibrationOptions(int Normals = 3, int Defectives = 3, IReadOnlyList<double>? Lambdas = null, double WeightStep = 0.1, int Seed = 0,
                                        IReadOnlyList<int>? Scales = null, int NumInferenceSteps = 50, int Resamples = Calibrator.DefaultResamples)
{
    public static readonly IReadOnlyList<double> DefaultLambdas = [0.3, 0.4];
    public IReadOnlyList<double> ResolvedLambdas => Lambdas ?? DefaultLambdas;

    /// <exception cref="ArgumentException">a size, λ, step or resample count out of range, naming it.</exception>
    public void Validate()
    {
        if (NumInferenceSteps < 1) throw new ArgumentException($"calibration needs num_inference_steps >= 1, got {NumInferenceSteps}");
        foreach (double l in ResolvedLambdas)
            if (OptionRules.DenoisingSteps(l, NumInferenceSteps) is string problem) throw new ArgumentException($"calibration λ {l.ToString(CultureInfo.InvariantCulture)} {problem}");
        if (Resamples is < 0 or 1) throw new ArgumentException($"calibration bootstrap resamples must be 0 (off) or >= 2, got {Resamples}");
        if (Normals < 1 || Defectives < 1) throw new ArgumentException($"calibration needs at least 1 normal and 1 defective image per category, got {Normals} and {Defectives}");
        if (ResolvedLambdas.Count == 0 || ResolvedLambdas.Any(l => !(l > 0 && l <= 1)))
            throw new ArgumentException($"calibration λ values must be in (0, 1], got {string.Join(",", ResolvedLambdas)}");
        _ = FusionWeights.SimplexGrid(WeightStep);
    }
}

/// <summary>One calibration image at the analysis resolution: a normal (<see cref="Mask"/> null) or a defective with its exact mask.</summary>
public sealed record CalibrationSample(RgbImage Image, BinaryMask? Mask, string Kind)
{
    public bool IsAnomalous => Mask is not null;
}

/// <summary>What calibration chose for one category, and how well it did on its calibration set.</summary>
/// <param name="NoiseStrength">The chosen λ.</param>
/// <param name="Weights">The chosen fusion weights (on maps divided by <paramref name="Scales"/>).</param>
/// <param name="Scales">σ_ms, σ_pg, σ_E: the standard deviation of each map over the calibration normals' pixels (at the chosen λ).</param>
/// <param name="Normalization">Raw image score → [0, 1] with the F1-optimal image threshold at 0.5.</param>
/// <param name="PixelThreshold">The F1-optimal pixel threshold of the smoothed map (raw scale), for the predicted region.</param>
/// <param name="ImageAuroc">Image AUROC on the calibration set at the choice.</param>
/// <param name="PixelAuroc">Pixel AUROC on the calibration set at the choice.</param>
/// <param name="Normals">Calibration normals used.</param>
/// <param name="Defectives">Calibration defectives used.</param>
public sealed record CategoryCalibration(double NoiseStrength, FusionWeights Weights, MapScales Scales, ScoreNormalization Normalization, double PixelThreshold,
                                         double ImageAuroc, double PixelAuroc, int Normals, int Defectives)
{
    public double Objective => (ImageAuroc + PixelAuroc) / 2;

    public JsonObject ToJson() => new()
    {
        ["noise_strength"] = NoiseStrength, ["weights"] = Weights.ToJson(), ["scales"] = Scales.ToJson(), ["normalization"] = Normalization.ToJson(),
        ["pixel_threshold"] = PixelThreshold, ["image_auroc"] = ImageAuroc, ["pixel_auroc"] = PixelAuroc, ["normals"] = Normals, ["defectives"] = Defectives,
    };

    /// <exception cref="InvalidDataException">a value missing, of the wrong type or out of range (naming the file and key).</exception>
    public static CategoryCalibration FromJson(JsonInput j)
    {
        double lambda = j["noise_strength"].Double();
        j["noise_strength"].Checked(lambda, OptionRules.NoiseStrength(lambda));
        return new CategoryCalibration(lambda, FusionWeights.FromJson(j["weights"]), MapScales.FromJson(j["scales"]),
            ScoreNormalization.FromJson(j["normalization"]), j["pixel_threshold"].Double(), j["image_auroc"].Double(0, 1),
            j["pixel_auroc"].Double(0, 1), j["normals"].Int(0), j["defectives"].Int(0));
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"λ {NoiseStrength:0.##}, {Weights}; calibration image AUROC {ImageAuroc:F3}, pixel AUROC {PixelAuroc:F3}; threshold {Normalization.Threshold:G4}");
}
