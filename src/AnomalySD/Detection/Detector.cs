using AnomalySD.Calibration;
using AnomalySD.Checkpoints;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Prompts;
using Microsoft.Extensions.Logging;

namespace AnomalySD.Detection;

/// <summary>Where a <see cref="Detector"/> runs and how it scores.</summary>
/// <param name="Devices">One engine per device ("cpu", "cuda:0", ...; "cpu" twice gives two CPU engines).</param>
/// <param name="Backbones">Where the scoring backbones come from.</param>
/// <param name="Request">What the user asks of scoring (masks, scales, steps, λ, resolutions, calibration on or off).</param>
public sealed record DetectorSettings(IReadOnlyList<string> Devices, ScoringBackbones Backbones, ScoringRequest Request);

/// <summary>
/// The library's one way to detect anomalies, shared by <c>detect</c>, <c>eval</c>, its shards and <c>serve</c>: it loads a
/// checkpoint once (one version, under a reader lease: <see cref="CheckpointStore"/>), holds one engine per device, resolves the
/// scoring options against the checkpoint, and scores batches of decoded images of one category into
/// <see cref="DetectionResult"/>s through the category's <see cref="PostProcessor"/>.
/// </summary>
/// <remarks>Engines are not thread-safe: calls that name one engine (<c>engine</c> argument) must not overlap; different engines may
/// run at once, each from its own thread.</remarks>
public sealed class Detector : IDisposable
{
    private readonly List<InpaintingModel> _engines;
    private readonly List<AnomalyModel> _models;
    // Banks rebuilt with the requested views, per engine (each engine is used by one thread at a time); shots decoded once.
    private readonly List<HashSet<string>> _banksReady;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<IReadOnlyList<RgbImage>>> _shots = new();

    private Detector(List<InpaintingModel> engines, ScoringSetup setup, string source, string? version, string? fingerprint)
    {
        _engines = engines;
        Setup = setup;
        _models = engines.Select(e => new AnomalyModel(e, setup.Detector)).ToList();
        _banksReady = engines.Select(_ => new HashSet<string>()).ToList();
        Source = source;
        Version = version;
        Fingerprint = fingerprint;
    }

    /// <summary>Loads the checkpoint <paramref name="checkpoint"/> on every device of <paramref name="settings"/>.</summary>
    /// <exception cref="ArgumentException">no device, or a request the checkpoint cannot run (naming why).</exception>
    /// <exception cref="InvalidDataException">not a checkpoint, or a metadata value out of range (naming the file and key).</exception>
    public static Detector Open(string checkpoint, DetectorSettings settings, ILogger log)
    {
        if (settings.Devices.Count == 0) throw new ArgumentException("a detector needs at least one device");
        var engines = new List<InpaintingModel>();
        try
        {
            // One lease for every engine: they all load the same version, and the fingerprint is that of the bytes loaded.
            using var lease = CheckpointStore.OpenForRead(checkpoint);
            CheckpointMetadata? meta = null;
            foreach (string device in settings.Devices)
            {
                var (model, m) = CheckpointLoader.Load(lease, device, settings.Backbones, log);
                engines.Add(model);
                meta ??= m;
            }
            var setup = ScoringRules.Resolve(meta!, settings.Request, log, FittedViews(engines[0], meta!));
            if (engines.Count > 1) log.LogInformation("{Count} engines ({Devices})", engines.Count, string.Join(", ", settings.Devices));
            return new Detector(engines, setup, checkpoint, lease.Version, lease.Fingerprint);
        }
        catch
        {
            foreach (var e in engines) e.Dispose();
            throw;
        }
    }

    /// <summary>A detector over a model fitted in this process (eval without a checkpoint); it takes ownership of <paramref name="model"/>.</summary>
    public static Detector FromModel(InpaintingModel model, CheckpointMetadata metadata, ScoringRequest request, ILogger log)
    {
        try { return new Detector([model], ScoringRules.Resolve(metadata, request, log, FittedViews(model, metadata)), "(fitted in this run, not saved)", null, null); }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The views of a category's bank in <paramref name="engine"/> (null for a category without one).</summary>
    private static Func<string, BankViews?> FittedViews(InpaintingModel engine, CheckpointMetadata meta) =>
        category => meta.Shots > 0 && engine.PrototypeRows(category) > 0 ? engine.PrototypeViews(category) : null;

    /// <summary>The request resolved against the checkpoint: its metadata with the overrides applied, the scoring options and the
    /// evaluation resolution.</summary>
    public ScoringSetup Setup { get; }

    public CheckpointMetadata Metadata => Setup.Metadata;

    /// <summary>The checkpoint folder (or a note for a model fitted in this run).</summary>
    public string Source { get; }

    /// <summary>The checkpoint version that was loaded (null for a model fitted in this run or an earlier engine's layout).</summary>
    public string? Version { get; }

    /// <summary>The fingerprint of the checkpoint files that were loaded (<see cref="CheckpointStore.Fingerprint"/>); null for a model fitted in this run.</summary>
    public string? Fingerprint { get; }

    public int EngineCount => _engines.Count;

    /// <summary>The resolution images are decoded and scored at.</summary>
    public int AnalysisSize => Metadata.AnalysisSize;

    public IReadOnlyList<string> Categories => Metadata.Categories.Select(c => c.Category).ToList();

    /// <summary>The engine of <paramref name="index"/> (for work beyond detection: the restoration check).</summary>
    public InpaintingModel Engine(int index) => _engines[index];

    /// <summary>A category's prompts and λ.</summary>
    /// <exception cref="KeyNotFoundException">a category the checkpoint was not fitted on (the message lists those it was).</exception>
    public CategoryPrompts Category(string category) => Metadata.Categories.FirstOrDefault(c => c.Category == category)
        ?? throw new KeyNotFoundException($"category '{category}' was not fitted in {Source} (fitted: {string.Join(", ", Categories)})");

    /// <summary>The decision rule of <paramref name="category"/>: its calibration (when the request applies it) and the threshold.</summary>
    public PostProcessor PostProcessor(string category, double? threshold = null) =>
        new(Metadata.Calibration.GetValueOrDefault(category), threshold);

    /// <summary>Decodes an image file at the analysis resolution, with the decoder's checks and limits.</summary>
    /// <exception cref="ImageLoadException">unreadable, undecodable, truncated or beyond the limits (naming the file).</exception>
    public RgbImage Decode(string path) => ImageIO.LoadRgb(path, AnalysisSize);

    /// <summary>Decodes an image's bytes at the analysis resolution (<paramref name="name"/> names it in errors).</summary>
    public RgbImage Decode(string name, byte[] data) => ImageIO.LoadRgb(name, data, AnalysisSize);

    /// <summary>
    /// Scores a batch of decoded images of <paramref name="category"/> (RGB in [0, 1] at <see cref="AnalysisSize"/>) on engine
    /// <paramref name="engine"/> and applies the category's decision rule; results in the order of the images.
    /// </summary>
    /// <param name="restored">Also return each image's inpainting of the highest-scoring mask (pictures).</param>
    /// <param name="threshold">A decision threshold replacing the calibrated 0.5 (normalised scale; raw when uncalibrated).</param>
    /// <exception cref="KeyNotFoundException">an unknown category.</exception>
    public IReadOnlyList<DetectionResult> Detect(string category, IReadOnlyList<RgbImage> images, bool restored = false, double? threshold = null, int engine = 0) =>
        Detect(category, images, images.Select(_ => threshold).ToList(), restored, engine);

    /// <summary>As <see cref="Detect(string, IReadOnlyList{RgbImage}, bool, double?, int)"/>, each image with its own threshold (null: the default).</summary>
    /// <exception cref="InvalidOperationException">a detector that scores transductively (use <see cref="DetectTransductive"/>).</exception>
    public IReadOnlyList<DetectionResult> Detect(string category, IReadOnlyList<RgbImage> images, IReadOnlyList<double?> thresholds, bool restored = false, int engine = 0)
    {
        if (thresholds.Count != images.Count) throw new ArgumentException($"{images.Count} images but {thresholds.Count} thresholds");
        if (Setup.Detector.Transductive.Enabled)
            throw new InvalidOperationException("this detector scores transductively: score the whole set of images with DetectTransductive");
        var prompts = Category(category);
        var posts = thresholds.Distinct().ToDictionary(t => t ?? double.NaN, t => PostProcessor(category, t));
        EnsureBank(category, engine);
        var scores = _models[engine].Score(category, images, prompts.NoiseStrength, restored);
        return scores.Select((s, k) => posts[thresholds[k] ?? double.NaN].Apply(s.Score, s.SmoothedMap, s.Restored)).ToList();
    }

    /// <summary>
    /// Scores a set of decoded images of <paramref name="category"/> transductively (<see cref="DetectorOptions.Transductive"/>: the set
    /// is, e.g., an evaluation's test split or the inputs of one <c>detect</c> run): each image is also compared with the others of
    /// the set (<see cref="AnomalyModel.ScoreTransductive"/>), so a result depends on the whole set. Results in the order of the images,
    /// through the category's decision rule (raw scores: the calibrated thresholds belong to the default scoring).
    /// </summary>
    /// <param name="threshold">A decision threshold on the raw scale (null: no decision).</param>
    /// <exception cref="InvalidOperationException">transductive scoring is off.</exception>
    /// <exception cref="ArgumentException">fewer than 2 images, or a category scored with inpainting terms under --transductive on.</exception>
    public IReadOnlyList<DetectionResult> DetectTransductive(string category, IReadOnlyList<RgbImage> images, double? threshold = null, int engine = 0)
    {
        Category(category);
        var post = PostProcessor(category, threshold);
        EnsureBank(category, engine);
        return _models[engine].ScoreTransductive(category, images).Select(s => post.Apply(s.Score, s.SmoothedMap)).ToList();
    }

    /// <summary>With requested bank views, rebuilds the category's bank on <paramref name="engine"/> from the checkpoint's shots once
    /// (<see cref="ShotBanks.Rebuild"/>) when its views differ.</summary>
    private void EnsureBank(string category, int engine)
    {
        if (Setup.Detector.Views is not { } views || Metadata.Shots == 0 || _banksReady[engine].Contains(category)) return;
        if (Setup.Detector.Transductive.Mode == TransductiveMode.Mutual) return; // M alone uses no bank
        var shots = _shots.GetOrAdd(category, c => new Lazy<IReadOnlyList<RgbImage>>(() => ShotBanks.LoadShots(Metadata, c, AnalysisSize))).Value;
        ShotBanks.Rebuild(_engines[engine], Metadata, category, views, AnalysisSize, shots);
        _banksReady[engine].Add(category);
    }

    public void Dispose()
    {
        foreach (var e in _engines) e.Dispose();
        _engines.Clear();
    }
}
