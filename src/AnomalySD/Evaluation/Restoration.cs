using AnomalySD.Data;
using AnomalySD.Engine;

namespace AnomalySD.Evaluation;

/// <summary>Masked-region errors of one restoration check.</summary>
/// <param name="InpaintMse">Mean over masked pixels (and channels, RGB in [0, 1]) of (inpainting − original)².</param>
/// <param name="BlurFillMse">The same for the masked Gaussian-blur fill (normalised convolution, σ = <see cref="Restoration.BlurSigma"/> px).</param>
public sealed record RestorationResult(int Images, int Masks, double InpaintMse, double BlurFillMse);

/// <summary>
/// Does the model restore normal appearance? On held-out normal images, random rectangles are inpainted and the
/// masked-region MSE against the original is compared with a baseline that fills the same region by a masked
/// Gaussian blur: fill = G_σ * (x ⊙ (1 − m)) / G_σ * (1 − m) (normalised convolution; pixels without any
/// unmasked neighbour within 4σ take the mean of the unmasked pixels).
/// </summary>
public static class Restoration
{
    public const double BlurSigma = 4.0;

    public static RestorationResult Check(InpaintingModel model, string category, IReadOnlyList<RgbImage> normals, int masksPerImage, InpaintOptions options, int seed)
    {
        var rng = new Random(seed);
        double inpaintSum = 0, blurSum = 0;
        long count = 0;
        int masks = 0;
        foreach (var image in normals)
        {
            int h = image.Height, w = image.Width;
            var rects = Enumerable.Range(0, masksPerImage).Select(_ => RandomRect(h, w, rng)).ToList();
            var outputs = model.Inpaint(category, image, rects, options);
            for (int k = 0; k < rects.Count; k++)
            {
                var fill = BlurFill(image, rects[k]);
                for (int c = 0; c < 3; c++)
                for (int i = 0; i < h * w; i++)
                {
                    if (rects[k].Data[i] == 0) continue;
                    double x = image.Data[c * h * w + i];
                    inpaintSum += Math.Pow(outputs[k].Data[c * h * w + i] - x, 2);
                    blurSum += Math.Pow(fill[c * h * w + i] - x, 2);
                    count++;
                }
                masks++;
            }
        }
        return new RestorationResult(normals.Count, masks, count == 0 ? double.NaN : inpaintSum / count, count == 0 ? double.NaN : blurSum / count);
    }

    /// <summary>A rectangle with sides uniform in [1/8, 1/3] of the image, anywhere inside it.</summary>
    public static BinaryMask RandomRect(int h, int w, Random rng)
    {
        int rh = rng.Next(Math.Max(1, h / 8), Math.Max(2, h / 3)), rw = rng.Next(Math.Max(1, w / 8), Math.Max(2, w / 3));
        int y0 = rng.Next(0, h - rh + 1), x0 = rng.Next(0, w - rw + 1);
        var data = new byte[h * w];
        for (int y = y0; y < y0 + rh; y++) Array.Fill(data, (byte)1, y * w + x0, rw);
        return new BinaryMask(w, h, data);
    }

    /// <summary>The normalised-convolution fill of the masked region (unmasked pixels are kept).</summary>
    public static float[] BlurFill(RgbImage image, BinaryMask mask)
    {
        int h = image.Height, w = image.Width, plane = h * w;
        var keep = new double[plane];
        for (int i = 0; i < plane; i++) keep[i] = mask.Data[i] == 0 ? 1 : 0;
        var weight = Blur(keep, h, w);
        var result = (float[])image.Data.Clone();
        for (int c = 0; c < 3; c++)
        {
            var masked = new double[plane];
            double sum = 0, n = 0;
            for (int i = 0; i < plane; i++)
            {
                masked[i] = image.Data[c * plane + i] * keep[i];
                sum += masked[i];
                n += keep[i];
            }
            var num = Blur(masked, h, w);
            double mean = n > 0 ? sum / n : 0;
            for (int i = 0; i < plane; i++)
                if (mask.Data[i] != 0) result[c * plane + i] = (float)(weight[i] > 1e-8 ? num[i] / weight[i] : mean);
        }
        return result;
    }

    private static double[] Blur(double[] src, int h, int w)
    {
        int r = (int)Math.Ceiling(4 * BlurSigma);
        var k = Enumerable.Range(-r, 2 * r + 1).Select(i => Math.Exp(-i * i / (2 * BlurSigma * BlurSigma))).ToArray();
        var tmp = new double[h * w];
        var dst = new double[h * w];
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            double s = 0;
            for (int d = -r; d <= r; d++) { int xx = x + d; if (xx >= 0 && xx < w) s += k[d + r] * src[y * w + xx]; }
            tmp[y * w + x] = s;
        }
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
        {
            double s = 0;
            for (int d = -r; d <= r; d++) { int yy = y + d; if (yy >= 0 && yy < h) s += k[d + r] * tmp[yy * w + x]; }
            dst[y * w + x] = s;
        }
        return dst;
    }
}
