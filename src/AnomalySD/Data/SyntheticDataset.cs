using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace AnomalySD.Data;

/// <summary>
/// Writes a small synthetic dataset in the MVTec AD layout: two classes, <c>weave</c> (a texture: a woven stripe
/// pattern) and <c>washer</c> (an object: a ring on a plain background), each with train/good, test/good and three
/// defect types drawn with exact masks: <c>scratch</c> (a thin dark line), <c>hole</c> (a dark disc) and <c>stain</c>
/// (a coloured blob; mask = where its opacity exceeds 0.5). Deterministic for a seed.
/// </summary>
public static class SyntheticDataset
{
    public static readonly string[] Defects = ["scratch", "hole", "stain"];

    public static void Write(string root, int size = 128, int train = 4, int testGood = 4, int testPerDefect = 3, int seed = 0)
    {
        var rng = new Random(seed);
        foreach (string category in new[] { "weave", "washer" })
        {
            string dir = Path.Combine(root, category);
            for (int i = 0; i < train; i++) Save(Normal(category, size, rng), Path.Combine(dir, "train", "good", $"{i:000}.png"));
            for (int i = 0; i < testGood; i++) Save(Normal(category, size, rng), Path.Combine(dir, "test", "good", $"{i:000}.png"));
            foreach (string defect in Defects)
            {
                for (int i = 0; i < testPerDefect; i++)
                {
                    var image = Normal(category, size, rng);
                    var mask = new float[size, size];
                    Draw(defect, image, mask, size, rng, category == "washer");
                    Save(image, Path.Combine(dir, "test", defect, $"{i:000}.png"));
                    SaveMask(mask, Path.Combine(dir, "ground_truth", defect, $"{i:000}_mask.png"));
                }
            }
        }
    }

    private static float[,,] Normal(string category, int size, Random rng)
    {
        var img = new float[3, size, size];
        double phase = rng.NextDouble() * 0.3, jitterX = (rng.NextDouble() - 0.5) * size * 0.04, jitterY = (rng.NextDouble() - 0.5) * size * 0.04;
        for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
        {
            double noise = (rng.NextDouble() - 0.5) * 0.03;
            if (category == "weave")
            {
                double u = Math.Sin((x + phase * 10) * 2 * Math.PI / 12), v = Math.Sin(y * 2 * Math.PI / 12);
                double t = (Math.Floor(x / 12.0) + Math.Floor(y / 12.0)) % 2 == 0 ? u : v;
                img[0, y, x] = (float)(0.55 + 0.2 * t + noise);
                img[1, y, x] = (float)(0.45 + 0.15 * t + noise);
                img[2, y, x] = (float)(0.30 + 0.1 * t + noise);
            }
            else
            {
                double dx = x - size / 2.0 - jitterX, dy = y - size / 2.0 - jitterY, r = Math.Sqrt(dx * dx + dy * dy) / size;
                bool ring = r > 0.12 && r < 0.33;
                double shade = ring ? 0.75 - 0.3 * Math.Abs(r - 0.225) : 0.12;
                img[0, y, x] = (float)(shade + noise);
                img[1, y, x] = (float)(shade * 0.95 + noise);
                img[2, y, x] = (float)(shade * 0.9 + 0.03 + noise);
            }
        }
        return img;
    }

    private static void Draw(string defect, float[,,] img, float[,] mask, int size, Random rng, bool onObject)
    {
        // Defects of the object class land on the ring (centre distance ~0.22 of the size).
        double angle0 = rng.NextDouble() * 2 * Math.PI;
        double cx = onObject ? size / 2.0 + Math.Cos(angle0) * size * 0.22 : size * (0.25 + 0.5 * rng.NextDouble());
        double cy = onObject ? size / 2.0 + Math.Sin(angle0) * size * 0.22 : size * (0.25 + 0.5 * rng.NextDouble());
        switch (defect)
        {
            case "scratch": DefectPainter.Scratch(img, mask, cx, cy, size, rng.NextDouble() * Math.PI, (0.05f, 0.05f, 0.05f)); break;
            case "hole": DefectPainter.Hole(img, mask, cx, cy, size * (0.04 + 0.03 * rng.NextDouble()), (0.02f, 0.02f, 0.02f)); break;
            default: DefectPainter.Stain(img, mask, cx, cy, size * (0.05 + 0.04 * rng.NextDouble()), (0.2f, 0.5f, 0.9f)); break;
        }
    }

    private static void Save(float[,,] img, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        int h = img.GetLength(1), w = img.GetLength(2);
        using var image = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            image[x, y] = new Rgb24(ImageIO.ToByte(img[0, y, x]), ImageIO.ToByte(img[1, y, x]), ImageIO.ToByte(img[2, y, x]));
        image.SaveAsPng(path);
    }

    private static void SaveMask(float[,] mask, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        int h = mask.GetLength(0), w = mask.GetLength(1);
        using var image = new Image<L8>(w, h);
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) image[x, y] = new L8(mask[y, x] > 0 ? (byte)255 : (byte)0);
        image.SaveAsPng(path);
    }

}
