using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.Processing;

namespace AnomalySD.Data;

/// <summary>An RGB image as planar float data: <c>Data[c * Height * Width + y * Width + x]</c>, c = R, G, B, values in [0, 1].</summary>
public sealed record RgbImage(int Width, int Height, float[] Data)
{
    public float this[int c, int y, int x] => Data[(c * Height + y) * Width + x];
}

/// <summary>A binary ground-truth or proposal mask: <c>Data[y * Width + x]</c> is 1 (anomalous / masked) or 0.</summary>
public sealed record BinaryMask(int Width, int Height, byte[] Data)
{
    public byte this[int y, int x] => Data[y * Width + x];
    public int Count => Data.Count(v => v != 0);
}

/// <summary>An image or mask file that could not be used; <see cref="Exception.Message"/> names the path and the problem.</summary>
public sealed class ImageLoadException(string path, string problem, Exception? inner = null)
    : Exception($"{path}: {problem}", inner)
{
    public string Path { get; } = path;
}

/// <summary>
/// Decodes images with ImageSharp 2.1 (PNG, JPEG, BMP, TIFF, GIF, TGA, WebP; 8/16-bit, grayscale, palette, RGBA are all
/// converted to 8-bit RGB, alpha dropped), applies the EXIF orientation, and resizes to the requested resolution.
/// <para>Orientation: images and masks are used as displayed, i.e. after their EXIF orientation (as MVTec AD and VisA masks are
/// drawn on the displayed image); a mask's size is checked against its image's displayed size.</para>
/// <para>Limits: a file whose header announces more than <see cref="MaxSide"/> pixels a side or <see cref="MaxPixels"/> pixels
/// is refused before any pixel is decoded, and no single allocation may exceed <see cref="MaxAllocationMegabytes"/>; either
/// is an <see cref="ImageLoadException"/> naming the file, so a batch skips it like any unreadable image.</para>
/// </summary>
public static class ImageIO
{
    /// <summary>Largest accepted side, in pixels.</summary>
    public const int MaxSide = 32768;

    /// <summary>Largest accepted image, in pixels (1.2 GB as 32-bit RGBA).</summary>
    public const long MaxPixels = 300_000_000;

    /// <summary>Largest single buffer the decoder or a resize may allocate.</summary>
    public const int MaxAllocationMegabytes = 2048;

    private static readonly Configuration Limited = CreateConfiguration();

    private static Configuration CreateConfiguration()
    {
        var c = Configuration.Default.Clone();
        c.MemoryAllocator = SixLabors.ImageSharp.Memory.MemoryAllocator.Create(new SixLabors.ImageSharp.Memory.MemoryAllocatorOptions
        {
            AllocationLimitMegabytes = MaxAllocationMegabytes,
        });
        return c;
    }

    /// <summary>Loads <paramref name="path"/> as RGB resized to <paramref name="size"/> x <paramref name="size"/>
    /// (bicubic; <paramref name="size"/> &lt;= 0 keeps the original size).</summary>
    /// <exception cref="ImageLoadException">missing, unreadable or undecodable file.</exception>
    public static RgbImage LoadRgb(string path, int size) => LoadRgb(path, ReadFile(path), size);

    /// <summary>Decodes an image file's bytes (<paramref name="name"/> names it in errors) as RGB resized to <paramref name="size"/> x
    /// <paramref name="size"/> (bicubic; &lt;= 0 keeps the original size), with the same checks and limits as a file.</summary>
    /// <exception cref="ImageLoadException">undecodable, truncated or beyond the limits.</exception>
    public static RgbImage LoadRgb(string name, byte[] file, int size)
    {
        string path = name;
        using var image = Decode<Rgb24>(name, file);
        if (size > 0 && (image.Width != size || image.Height != size))
            Guard(path, () => image.Mutate(x => x.Resize(new ResizeOptions { Size = new Size(size, size), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Bicubic })));
        int w = image.Width, h = image.Height, plane = w * h;
        var data = new float[3 * plane];
        image.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < h; y++)
            {
                var row = rows.GetRowSpan(y);
                for (int x = 0; x < w; x++)
                {
                    data[y * w + x] = row[x].R / 255f;
                    data[plane + y * w + x] = row[x].G / 255f;
                    data[2 * plane + y * w + x] = row[x].B / 255f;
                }
            }
        });
        return new RgbImage(w, h, data);
    }

    /// <summary>Loads a mask (255/0 MVTec masks: above 127 is anomalous; 1/0 VisA masks, largest value 1: any non-zero pixel) resized with nearest
    /// neighbour to <paramref name="size"/> (&lt;= 0 keeps the size). If <paramref name="expectedWidth"/>/<paramref name="expectedHeight"/>
    /// are given (the image's displayed size, <see cref="Identify"/>), the mask's displayed size must equal them.</summary>
    /// <exception cref="ImageLoadException">unreadable file, or a size different from the image's.</exception>
    public static BinaryMask LoadMask(string path, int size, int? expectedWidth = null, int? expectedHeight = null)
    {
        using var image = Decode<L8>(path, ReadFile(path));
        if (expectedWidth is int ew && expectedHeight is int eh && (image.Width != ew || image.Height != eh))
            throw new ImageLoadException(path, $"mask is {image.Width}x{image.Height} but its image is {ew}x{eh} (as displayed, after EXIF orientation)");
        if (size > 0 && (image.Width != size || image.Height != size))
            Guard(path, () => image.Mutate(x => x.Resize(new ResizeOptions { Size = new Size(size, size), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.NearestNeighbor })));
        var values = new byte[image.Width * image.Height];
        int w = image.Width;
        image.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < rows.Height; y++)
            {
                var row = rows.GetRowSpan(y);
                for (int x = 0; x < w; x++) values[y * w + x] = row[x].PackedValue;
            }
        });
        // 0/1 masks (VisA) and 0/255 masks (MVTec) both work: a mask whose largest value is 1 marks every non-zero pixel; one
        // with larger values is thresholded at 127, so the faint values that JPEG or antialiasing leave at its edges stay normal.
        byte cut = values.Length > 0 && values.Max() <= 1 ? (byte)0 : (byte)127;
        var data = Array.ConvertAll(values, v => v > cut ? (byte)1 : (byte)0);
        return new BinaryMask(image.Width, image.Height, data);
    }

    /// <summary><paramref name="image"/> resized to <paramref name="width"/> x <paramref name="height"/> (bicubic), for pictures.</summary>
    public static RgbImage Resize(RgbImage image, int width, int height)
    {
        using var img = new Image<Rgb24>(image.Width, image.Height);
        for (int y = 0; y < image.Height; y++)
        for (int x = 0; x < image.Width; x++)
            img[x, y] = new Rgb24(ToByte(image[0, y, x]), ToByte(image[1, y, x]), ToByte(image[2, y, x]));
        img.Mutate(c => c.Resize(new ResizeOptions { Size = new Size(width, height), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Bicubic }));
        var data = new float[3 * width * height];
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
        {
            var p = img[x, y];
            data[y * width + x] = p.R / 255f;
            data[width * height + y * width + x] = p.G / 255f;
            data[2 * width * height + y * width + x] = p.B / 255f;
        }
        return new RgbImage(width, height, data);
    }

    /// <summary>A channel value in [0, 1] as a byte: v · 255 rounded to the nearest (ties to even), clamped to 0..255. The one
    /// conversion of the library (pictures, the synthetic dataset, resizing).</summary>
    public static byte ToByte(float v) => (byte)Math.Clamp(MathF.Round(v * 255), 0, 255);

    /// <summary>Width and height of an image file as displayed (after its EXIF orientation: 5-8 swap the sides), without
    /// decoding its pixels.</summary>
    /// <exception cref="ImageLoadException">missing or unrecognised file, or a header beyond the limits.</exception>
    public static (int Width, int Height) Identify(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return Identify(path, stream);
        }
        catch (Exception e) when (e is not ImageLoadException) { throw Wrap(path, e); }
    }

    private static (int Width, int Height) Identify(string path, Stream stream)
    {
        try
        {
            var info = Image.Identify(Limited, stream) ?? throw new ImageLoadException(path, "not a recognised image format");
            CheckLimits(path, info.Width, info.Height);
            ushort orientation = info.Metadata.ExifProfile?.GetValue(SixLabors.ImageSharp.Metadata.Profiles.Exif.ExifTag.Orientation)?.Value ?? 1;
            return orientation is >= 5 and <= 8 ? (info.Height, info.Width) : (info.Width, info.Height);
        }
        catch (Exception e) when (e is not ImageLoadException) { throw Wrap(path, e); }
    }

    private static byte[] ReadFile(string path)
    {
        try { return File.ReadAllBytes(path); }
        catch (Exception e) { throw Wrap(path, e); }
    }

    private static void CheckLimits(string path, int width, int height)
    {
        if (width > MaxSide || height > MaxSide || (long)width * height > MaxPixels)
            throw new ImageLoadException(path, $"the header announces {width}x{height} pixels, beyond the limits ({MaxSide} a side, {MaxPixels / 1_000_000} megapixels)");
    }

    /// <summary>Decodes a whole image file's bytes: the header's size is checked against the limits and the container against
    /// truncation (<see cref="ImageIntegrity"/>) before any pixel is decoded; the EXIF orientation is applied.</summary>
    private static Image<T> Decode<T>(string path, byte[] data) where T : unmanaged, IPixel<T>
    {
        var format = Image.DetectFormat(Limited, data) ?? throw new ImageLoadException(path, "not a recognised image format");
        if (ImageIntegrity.Problem(format.Name, data) is string problem) throw new ImageLoadException(path, problem);
        using (var header = new MemoryStream(data, writable: false)) Identify(path, header);
        try
        {
            var image = Image.Load<T>(Limited, data);
            image.Mutate(x => x.AutoOrient());
            return image;
        }
        catch (Exception e) { throw Wrap(path, e); }
    }

    /// <summary>Runs an operation on a decoded image; any failure (an allocation over the limit...) becomes an ImageLoadException.</summary>
    private static void Guard(string path, Action operation)
    {
        try { operation(); }
        catch (Exception e) { throw Wrap(path, e); }
    }

    private static ImageLoadException Wrap(string path, Exception e) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => new ImageLoadException(path, "file not found", e),
        UnknownImageFormatException => new ImageLoadException(path, "not a recognised image format", e),
        InvalidImageContentException => new ImageLoadException(path, $"corrupt image ({e.Message})", e),
        IOException => new ImageLoadException(path, $"cannot read ({e.Message})", e),
        InvalidMemoryOperationException or OutOfMemoryException => new ImageLoadException(path, $"too large to process ({e.Message})", e),
        _ => new ImageLoadException(path, $"cannot decode ({e.GetType().Name}: {e.Message})", e),
    };
}
