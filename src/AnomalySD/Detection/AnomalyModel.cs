using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Masks;
using AnomalySD.Scoring;

namespace AnomalySD.Detection;

/// <summary>The score of one image: maps at the analysis resolution and the image score (<see cref="DetectorOptions.ImageScore"/> of the
/// smoothed map: its max by default).</summary>
/// <param name="ErrorMap">The map at the feature grid that was upsampled: E (eq. 14), or in transductive scoring the fused or mutual map.</param>
/// <param name="Restored">With <c>restored: true</c>: the inpainting (pasted, RGB in [0, 1]) of the mask whose distance inside it
/// was the largest: what the method believes the product should look like there. Null when no mask was inpainted.</param>
public sealed record ImageScore(Map2D SmoothedMap, double Score, Map2D? ErrorMap, BinaryMask? PrototypeMask, RgbImage? Restored = null);

/// <summary>The three maps fused by <see cref="FusionWeights"/>, at the analysis resolution: S_ms (eq. 19), S_pg (eq. 20) and
/// the bilinearly upsampled E (eq. 14); null where the strategy does not compute them. S_pg is all zero when M^(p) is empty.</summary>
public sealed record ScoreComponents(Map2D? MultiScale, Map2D? Prototype, Map2D? ErrorMap, Map2D? RawErrorMap, BinaryMask? PrototypeMask, RgbImage? Restored);

/// <summary>
/// Scores images with a fitted <see cref="InpaintingModel"/> (section 4.2-4.3): grid masks M^(k)_{i,j}, the
/// prototype-guided mask M^(p) = Upsample(I(E &gt; r)) with r from eq. 15, all inpainted in one native call; then
/// S^(k) (eq. 18), S_ms (eq. 19), S_pg (eq. 20), the fused map (eq. 21, or calibrated <see cref="FusionWeights"/>), Gaussian
/// blur, max. A category whose weights give the inpainting terms no weight is scored from E alone, without UNet work.
/// </summary>
/// <remarks>The pure model of the method (anomalib's <c>torch_model.py</c>): images in, maps and scores out on the raw scale. Loading,
/// the decision rule and orchestration live in <see cref="Detector"/>, <see cref="PostProcessor"/> and the evaluation.</remarks>
public sealed class AnomalyModel(InpaintingModel model, DetectorOptions options)
{
    public DetectorOptions Options { get; } = options;

    // Grid masks and their Map2D form depend only on the image size: built once, reused for every image.
    private (int H, int W, IReadOnlyList<GridMask> Grid, Map2D[] Maps)? _grid;

    private (IReadOnlyList<GridMask> Grid, Map2D[] Maps) GridFor(int h, int w)
    {
        if (_grid is not { } g || g.H != h || g.W != w)
        {
            var grid = MaskProposals.Grid(h, w, Options.Scales ?? MaskProposals.DefaultScales);
            _grid = g = (h, w, grid, grid.Select(m => ToMap(m.Mask)).ToArray());
        }
        return (g.Grid, g.Maps);
    }

    /// <summary>Scores <paramref name="image"/> (RGB in [0, 1] at the analysis resolution) of <paramref name="category"/>.
    /// <paramref name="noiseStrength"/> overrides the inpaint options' λ (per-category λ). <paramref name="restored"/>: also return
    /// the inpainting of the highest-scoring mask (for pictures).</summary>
    public ImageScore Score(string category, RgbImage image, double? noiseStrength = null, bool restored = false) =>
        Score(category, [image], noiseStrength, restored)[0];

    /// <summary>Scores a batch of images of one size (<see cref="Score(string, RgbImage, double?, bool)"/> each). A category scored from E
    /// alone computes the batch's error maps in one native call (the backbone runs once on the batch); inpainting runs image by image.</summary>
    public IReadOnlyList<ImageScore> Score(string category, IReadOnlyList<RgbImage> images, double? noiseStrength = null, bool restored = false)
    {
        var (weights, scales) = Options.FusionFor(category);
        bool batchedErrorMaps = !weights.UsesInpainting && weights.ErrorMap > 0 && images.Count > 1 && images.All(i => i.Width == images[0].Width && i.Height == images[0].Height);
        var errors = batchedErrorMaps ? model.ErrorMaps(category, images, Options.Matching) : null;
        var scores = new ImageScore[images.Count];
        for (int k = 0; k < images.Count; k++)
        {
            var image = images[k];
            var c = Components(category, image, noiseStrength, weights.UsesInpainting, weights.ErrorMap > 0, restored, multiScale: weights.MultiScale > 0, errors?[k]);
            var smoothed = GaussianSmoothing.Blur(ScoreFusion.Weighted(c.MultiScale, c.Prototype, c.ErrorMap, weights, scales, image.Height, image.Width), Options.Sigma);
            scores[k] = new ImageScore(smoothed, Options.ImageScore.Apply(smoothed), c.RawErrorMap, c.PrototypeMask, c.Restored);
        }
        return scores;
    }

    /// <summary>
    /// Scores a set of images of <paramref name="category"/> (RGB in [0, 1], one size) transductively (<see cref="DetectorOptions.Transductive"/>):
    /// the prototype features of every image once (8 images per native call), the mutual maps M of the set against at most K
    /// references per image (<see cref="MutualScoring.References"/>, seeded by the inpainting seed), fused with the shot-bank maps E
    /// of the same features (<see cref="MutualScoring.Fuse"/>) or alone; then, per image, the map upsampled bilinearly to the image
    /// size, the Gaussian blur and the image score. Memory: the features of the set (n x 384 x H/8 x W/8 floats, 1.5 MB per
    /// 256 x 256 image) plus the engine's per-reference table (n x K x H/8 x W/8 floats).
    /// </summary>
    /// <exception cref="ArgumentException">fewer than 2 images, images of several sizes, or a category that cannot be scored so
    /// (<see cref="ScoringRules.TransductiveProblem"/>).</exception>
    public IReadOnlyList<ImageScore> ScoreTransductive(string category, IReadOnlyList<RgbImage> images)
    {
        var t = Options.Transductive;
        if (!t.Enabled) throw new InvalidOperationException("transductive scoring is off in these options");
        if (ScoringRules.TransductiveProblem(Options, category) is string problem) throw new ArgumentException(problem);
        if (images.Count < 2) throw new ArgumentException($"category '{category}': transductive scoring compares each image with the others of its set, and the set has {images.Count} image(s)");
        var features = model.PrototypeFeatures(images);
        var references = MutualScoring.References(images.Count, t.ReferencesCap, Options.Inpaint?.Seed ?? 0);
        var mutual = model.MutualMaps(features, references, t.Fraction);
        var maps = t.Mode == TransductiveMode.On ? MutualScoring.Fuse(model.ErrorMaps(category, features, Options.Matching), mutual) : mutual;
        var scores = new ImageScore[images.Count];
        for (int k = 0; k < images.Count; k++)
        {
            var smoothed = GaussianSmoothing.Blur(Map2D.ResizeBilinear(maps[k], images[k].Height, images[k].Width), Options.Sigma);
            scores[k] = new ImageScore(smoothed, Options.ImageScore.Apply(smoothed), maps[k], null);
        }
        return scores;
    }

    /// <summary>The maps that <see cref="Score"/> fuses (for calibration, which fuses them under many weights).</summary>
    /// <param name="inpainting">Compute S_ms and S_pg (the UNet work).</param>
    /// <param name="errorMap">Return the upsampled E.</param>
    /// <param name="multiScale">Inpaint the grid masks for S_ms. False (a calibrated weight of 0 on S_ms) inpaints the prototype mask
    /// alone, with the noise it has among the grid masks (seed + its index), and returns no S_ms: 1 mask of UNet work instead of 86.</param>
    /// <param name="computedErrorMap">E of this image when already computed (a batch's), else null.</param>
    public ScoreComponents Components(string category, RgbImage image, double? noiseStrength, bool inpainting, bool errorMap, bool restored = false,
                                      bool multiScale = true, Map2D? computedErrorMap = null)
    {
        int h = image.Height, w = image.Width;
        var inpaint = Options.Inpaint ?? new InpaintOptions();
        if (noiseStrength is double lambda) inpaint = inpaint with { NoiseStrength = lambda };
        bool prototypeTerm = inpainting && Options.Masks == MaskStrategy.Full;

        Map2D? errors = null, upsampled = null;
        BinaryMask? prototypeMask = null;
        if (prototypeTerm || errorMap)
        {
            errors = computedErrorMap ?? model.ErrorMap(category, image, Options.Matching);
            if (errorMap) upsampled = Map2D.ResizeBilinear(errors, h, w);
            if (prototypeTerm)
            {
                double r = PrototypeThreshold.Select(errors);
                var mask = PrototypeThreshold.Mask(errors, r, h, w);
                prototypeMask = new BinaryMask(w, h, Array.ConvertAll(mask.Data, v => v > 0.5 ? (byte)1 : (byte)0));
            }
        }
        if (!inpainting) return new ScoreComponents(null, null, upsampled, errors, prototypeMask, null);

        var (allGrid, allGridMaps) = GridFor(h, w);
        IReadOnlyList<GridMask> grid = multiScale ? allGrid : [];
        Map2D[] gridMaps = multiScale ? allGridMaps : [];
        var masks = grid.Select(g => g.Mask).ToList();
        // An empty prototype mask (E constant) inpaints nothing: its S_pg is 0 and needs no UNet work.
        bool usePrototype = prototypeMask is not null && prototypeMask.Count > 0;
        if (usePrototype) masks.Add(prototypeMask!);
        if (masks.Count == 0) return new ScoreComponents(null, prototypeTerm ? new Map2D(h, w) : null, upsampled, errors, prototypeMask, null);
        // Mask i's noise is seeded seed + i: the prototype mask alone keeps the noise it has after the grid masks.
        if (!multiScale) inpaint = inpaint with { Seed = inpaint.Seed + (ulong)allGrid.Count };
        var (distances, inpaintings) = model.InpaintDistances(category, image, masks, inpaint, returnInpaintings: restored);

        var scaleScores = new List<Map2D>();
        foreach (var scale in grid.Select((g, i) => (g, i)).GroupBy(t => t.g.Scale))
        {
            var scaleMasks = scale.Select(t => gridMaps[t.i]).ToList();
            var scaleDistances = scale.Select(t => distances[t.i]).ToList();
            scaleScores.Add(ScoreFusion.ScaleScore(scaleMasks, scaleDistances));
        }
        var prototypeGuided = usePrototype ? ScoreFusion.PrototypeScore(ToMap(prototypeMask!), distances[^1]) : new Map2D(h, w);
        RgbImage? best = null;
        if (inpaintings is not null)
        {
            // The mask with the largest distance inside it: where the method restored the most.
            int arg = Enumerable.Range(0, masks.Count).MaxBy(k => MaxInside(masks[k], distances[k]));
            best = inpaintings[arg];
        }
        return new ScoreComponents(multiScale ? ScoreFusion.HarmonicMean(scaleScores) : null, prototypeTerm ? prototypeGuided : null, upsampled, errors, prototypeMask, best);
    }

    private static double MaxInside(BinaryMask mask, Map2D distance)
    {
        double m = 0;
        for (int i = 0; i < mask.Data.Length; i++) if (mask.Data[i] != 0 && distance.Data[i] > m) m = distance.Data[i];
        return m;
    }

    private static Map2D ToMap(BinaryMask m) => new(m.Height, m.Width, Array.ConvertAll(m.Data, v => (double)v));
}
