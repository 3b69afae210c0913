using System.Globalization;

namespace AnomalySD.Engine;

/// <summary>
/// Aug(·) of eq. 13: the views each shot enters the prototype bank under. <see cref="Rot4"/> is the engine's default (and that of
/// every checkpoint written before views were an option).
/// </summary>
/// <param name="Rotations">Angles in degrees, multiples of 90 (counter-clockwise).</param>
/// <param name="HorizontalFlip">Each rotation also of the horizontally flipped shot.</param>
public sealed record BankViews(IReadOnlyList<int> Rotations, bool HorizontalFlip)
{
    /// <summary>The shot as it is (1 view).</summary>
    public static readonly BankViews None = new([0], false);

    /// <summary>0, 90, 180 and 270 degrees (4 views): the default.</summary>
    public static readonly BankViews Rot4 = new([0, 90, 180, 270], false);

    /// <summary>The 4 rotations of the shot and of its mirror image: the 8 elements of the dihedral group D4.</summary>
    public static readonly BankViews Dihedral8 = new([0, 90, 180, 270], true);

    /// <summary>Number of feature maps each shot adds.</summary>
    public int Count => Rotations.Count * (HorizontalFlip ? 2 : 1);

    /// <summary>"none", "rot4" or "dihedral8".</summary>
    /// <exception cref="ArgumentException">any other name (naming the known ones).</exception>
    public static BankViews Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "none" => None,
        "rot4" => Rot4,
        "dihedral8" => Dihedral8,
        _ => throw new ArgumentException($"bank views '{name}': must be none, rot4 or dihedral8"),
    };

    public bool Equals(BankViews? other) => other is not null && HorizontalFlip == other.HorizontalFlip && Rotations.SequenceEqual(other.Rotations);

    public override int GetHashCode() => HashCode.Combine(HorizontalFlip, string.Join(",", Rotations));

    public override string ToString() =>
        Equals(None) ? "none" : Equals(Rot4) ? "rot4" : Equals(Dihedral8) ? "dihedral8"
        : $"rotations {string.Join(",", Rotations)}{(HorizontalFlip ? " + flipped" : "")}";
}

/// <summary>
/// The nearest-neighbour search of the error map E (eq. 14): <see cref="Global"/> (every bank patch, the paper's) or position-aware
/// (<see cref="Local"/>): a test patch at grid cell (y, x) is compared only with the bank patches within <see cref="Radius"/> cells,
/// Chebyshev distance, of (y, x) in each view's own feature map. The grid is that of ResNet18 layer 2 (stride 8 pixels).
/// </summary>
/// <param name="Radius">Null: global; else the radius r &gt;= 0 in grid cells.</param>
public sealed record PatchMatching(int? Radius)
{
    public static readonly PatchMatching Global = new((int?)null);

    public static PatchMatching Local(int radius) =>
        radius >= 0 ? new PatchMatching(radius) : throw new ArgumentOutOfRangeException(nameof(radius), radius, "the radius must be >= 0");

    public bool IsGlobal => Radius is null;

    /// <summary>The engine's radius: -1 for global.</summary>
    internal long NativeRadius => Radius ?? -1;

    /// <summary>"global" or "local:R" (R a whole number of grid cells, 0 to 64).</summary>
    /// <exception cref="ArgumentException">anything else.</exception>
    public static PatchMatching Parse(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t == "global") return Global;
        if (t.StartsWith("local:", StringComparison.Ordinal) && int.TryParse(t["local:".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int r) && r <= 64)
            return Local(r);
        throw new ArgumentException($"matching '{text}': must be global or local:R with R a radius in grid cells from 0 to 64 (e.g. local:2)");
    }

    public override string ToString() => Radius is int r ? $"local:{r}" : "global";
}

/// <summary>Prototype features ψ (eq. 12) of a set of images: <c>Data[((i * Channels + c) * Height + y) * Width + x]</c>, at the
/// layer-2 grid (ceil(H / 8) x ceil(W / 8)).</summary>
public sealed record FeatureMaps(int Count, int Channels, int Height, int Width, float[] Data)
{
    /// <summary>Floats of one image's maps.</summary>
    public int PerImage => Channels * Height * Width;
}
