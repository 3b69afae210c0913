using AnomalySD.Data;
using AnomalySD.Scoring;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace AnomalySD.Visualization;

/// <summary>Visualisation helpers: pure functions from maps to pixels.</summary>
public static class Visuals
{
    /// <summary>A jet-like colormap of t in [0, 1] (blue → cyan → yellow → red).</summary>
    public static Rgb24 Colormap(double t)
    {
        t = Math.Clamp(t, 0, 1);
        double r = Math.Clamp(1.5 - Math.Abs(4 * t - 3), 0, 1), g = Math.Clamp(1.5 - Math.Abs(4 * t - 2), 0, 1), b = Math.Clamp(1.5 - Math.Abs(4 * t - 1), 0, 1);
        return new Rgb24((byte)(255 * r), (byte)(255 * g), (byte)(255 * b));
    }

    /// <summary>Pixels between the tiles of a <see cref="Panel"/>.</summary>
    public const int PanelGap = 4;

    /// <summary>
    /// A case as a strip of five tiles of the image's size, left to right (as anomalib's visualiser and the paper's Fig. 3):
    /// <list type="number">
    /// <item>the image;</item>
    /// <item>the anomaly map on a fixed scale (<paramref name="normalized"/>, values in [0, 1], 0.5 = the calibrated threshold)
    /// blended over the image, more opaque where the score is higher, so the product stays visible;</item>
    /// <item>the predicted region (<paramref name="predicted"/>: the map at the calibrated pixel threshold) in red over the image
    /// (the image alone when null);</item>
    /// <item>the ground-truth contour in green over the image (the image alone when there is no mask);</item>
    /// <item>the inpainted "normal" image of the mask that scored highest (grey when there is none).</item>
    /// </list>
    /// Tile k starts at x = k · (width + <see cref="PanelGap"/>); the gaps are black.
    /// </summary>
    public static Image<Rgb24> Panel(RgbImage image, Map2D normalized, BinaryMask? predicted, BinaryMask? groundTruth, RgbImage? restored)
    {
        int w = image.Width, h = image.Height;
        var panel = new Image<Rgb24>(5 * w + 4 * PanelGap, h, new Rgb24(0, 0, 0));
        static Rgb24 Pixel(RgbImage im, int y, int x) => new(ImageIO.ToByte(im[0, y, x]), ImageIO.ToByte(im[1, y, x]), ImageIO.ToByte(im[2, y, x]));
        static Rgb24 Mix(Rgb24 a, Rgb24 b, double t) =>
            new((byte)(a.R * (1 - t) + b.R * t), (byte)(a.G * (1 - t) + b.G * t), (byte)(a.B * (1 - t) + b.B * t));
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            var px = Pixel(image, y, x);
            double n = Math.Clamp(normalized[y, x], 0, 1);
            panel[x, y] = px;
            panel[(w + PanelGap) + x, y] = Mix(px, Colormap(n), 0.25 + 0.5 * n);
            panel[2 * (w + PanelGap) + x, y] = predicted is not null && predicted[y, x] != 0 ? Mix(px, new Rgb24(255, 0, 0), 0.6) : px;
            panel[3 * (w + PanelGap) + x, y] = groundTruth is not null && IsContour(groundTruth, y, x) ? new Rgb24(0, 255, 0) : px;
            panel[4 * (w + PanelGap) + x, y] = restored is not null ? Pixel(restored, y, x) : new Rgb24(128, 128, 128);
        }
        return panel;
    }

    /// <summary>Whether (y, x) is a marked pixel of <paramref name="mask"/> with an unmarked 4-neighbour (or on the border).</summary>
    public static bool IsContour(BinaryMask mask, int y, int x) =>
        mask[y, x] != 0 && (x == 0 || y == 0 || x == mask.Width - 1 || y == mask.Height - 1 ||
                            mask[y, x - 1] == 0 || mask[y, x + 1] == 0 || mask[y - 1, x] == 0 || mask[y + 1, x] == 0);

    /// <summary>The pixels of <paramref name="map"/> at or above <paramref name="threshold"/>.</summary>
    public static BinaryMask Region(Map2D map, double threshold) =>
        new(map.Width, map.Height, Array.ConvertAll(map.Data, v => v >= threshold ? (byte)1 : (byte)0));
}
