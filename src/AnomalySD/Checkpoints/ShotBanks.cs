using AnomalySD.Data;
using AnomalySD.Engine;

namespace AnomalySD.Checkpoints;

/// <summary>
/// Prototype banks rebuilt from a checkpoint's shots: for scoring with other bank views (eq. 13's Aug) than the ones the
/// checkpoint's banks were made with. The shots are the files the fit used (<see cref="CheckpointMetadata.ShotPaths"/>, absolute
/// paths), decoded at the analysis resolution as the fit decoded them.
/// </summary>
public static class ShotBanks
{
    /// <summary>The shots of <paramref name="category"/> decoded at <paramref name="analysisSize"/>.</summary>
    /// <exception cref="InvalidDataException">the checkpoint records no shot for the category.</exception>
    /// <exception cref="FileNotFoundException">a shot file is gone (naming it and the category).</exception>
    /// <exception cref="ImageLoadException">a shot file cannot be decoded (naming it).</exception>
    public static IReadOnlyList<RgbImage> LoadShots(CheckpointMetadata meta, string category, int analysisSize)
    {
        var paths = meta.ShotPaths.GetValueOrDefault(category) ?? [];
        if (paths.Count == 0) throw new InvalidDataException($"category '{category}': the checkpoint records no shot, so its prototype bank cannot be rebuilt with other views");
        foreach (string p in paths)
            if (!File.Exists(p))
                throw new FileNotFoundException($"category '{category}': shot '{p}' recorded in the checkpoint is missing; other bank views need the shots the fit used", p);
        return paths.Select(p => ImageIO.LoadRgb(p, analysisSize)).ToList();
    }

    /// <summary>Replaces the bank of <paramref name="category"/> in <paramref name="model"/> by the checkpoint's shots under
    /// <paramref name="views"/>; returns false (and does nothing) when the bank already has those views.</summary>
    public static bool Rebuild(InpaintingModel model, CheckpointMetadata meta, string category, BankViews views, int analysisSize,
                               IReadOnlyList<RgbImage>? shots = null)
    {
        if (model.PrototypeViews(category).Equals(views)) return false;
        model.SetPrototypes(category, shots ?? LoadShots(meta, category, analysisSize), views);
        return true;
    }
}
