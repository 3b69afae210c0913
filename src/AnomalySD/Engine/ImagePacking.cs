using AnomalySD.Data;

namespace AnomalySD.Engine;

/// <summary>The one place where images and masks become the engine's row-major float buffers, with their sizes checked.</summary>
internal static class ImagePacking
{
    /// <summary>Images in [0, 1] packed as [N, 3, H, W] in [-1, 1]; every image must be <paramref name="width"/> x <paramref name="height"/>.</summary>
    /// <exception cref="ArgumentException">no image, or an image of another size (naming its index).</exception>
    public static float[] Signed(IReadOnlyList<RgbImage> images, int width, int height, string what = "image")
    {
        if (images.Count == 0) throw new ArgumentException($"no {what} given");
        int size = 3 * width * height;
        var data = new float[images.Count * size];
        for (int k = 0; k < images.Count; k++)
        {
            var image = images[k];
            if (image.Width != width || image.Height != height || image.Data.Length != size)
                throw new ArgumentException($"{what} {k} is {image.Width}x{image.Height}, expected {width}x{height}");
            for (int i = 0; i < size; i++) data[k * size + i] = image.Data[i] * 2f - 1f;
        }
        return data;
    }

    /// <summary>Masks packed as [N, H, W] floats (1 = set); every mask must be <paramref name="width"/> x <paramref name="height"/>.</summary>
    /// <exception cref="ArgumentException">a mask of another size (naming its index).</exception>
    public static float[] Masks(IReadOnlyList<BinaryMask> masks, int width, int height, string what = "mask")
    {
        int plane = width * height;
        var m = new float[masks.Count * plane];
        for (int k = 0; k < masks.Count; k++)
        {
            if (masks[k].Width != width || masks[k].Height != height || masks[k].Data.Length != plane)
                throw new ArgumentException($"{what} {k} is {masks[k].Width}x{masks[k].Height}, expected {width}x{height}");
            for (int i = 0; i < plane; i++) m[k * plane + i] = masks[k].Data[i];
        }
        return m;
    }

    /// <summary>[N, 3, H, W] in [-1, 1] -> N images in [0, 1].</summary>
    public static RgbImage[] Unsigned(float[] data, int n, int height, int width)
    {
        int size = 3 * height * width;
        var result = new RgbImage[n];
        for (int k = 0; k < n; k++)
        {
            var d = new float[size];
            for (int i = 0; i < size; i++) d[i] = (data[k * size + i] + 1f) * 0.5f;
            result[k] = new RgbImage(width, height, d);
        }
        return result;
    }

    /// <summary>[N, H, W] floats -> N maps.</summary>
    public static Scoring.Map2D[] Maps(float[] data, int n, int height, int width)
    {
        int plane = height * width;
        var maps = new Scoring.Map2D[n];
        for (int k = 0; k < n; k++)
        {
            var d = new double[plane];
            for (int i = 0; i < plane; i++) d[i] = data[k * plane + i];
            maps[k] = new Scoring.Map2D(height, width, d);
        }
        return maps;
    }
}
