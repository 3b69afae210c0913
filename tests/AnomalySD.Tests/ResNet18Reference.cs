using System.Globalization;
using AnomalySD.Engine;
using AnomalySD.ModelPrep;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace AnomalySD.Tests;

/// <summary>
/// References for the ImageNet ResNet18 backbone, reusable by the engine's ResNet18 tests:
/// <list type="bullet">
/// <item><see cref="OrtFeatures"/>: the ORIGINAL ONNX models (ResNetPreprocess.onnx then ResNet18.onnx) run by
/// ONNX Runtime, RGB 0-255 [3,224,224] in, pooled 512-d out.</item>
/// <item><see cref="ReferenceFeatures"/>: a naive C# forward pass from the converted safetensors weights and
/// their metadata (channel order, mean image, pads, strides, blocks, BN eps).</item>
/// <item><see cref="SyntheticImage"/>: deterministic test images.</item>
/// </list>
/// </summary>
public static class ResNet18Reference
{
    public const int Size = 224;

    private static readonly Lazy<(InferenceSession Prep, InferenceSession Net)> Sessions = new(() =>
    {
        var o = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        return (new InferenceSession(ResNet18Converter.DefaultPreprocessPath(), o),
                new InferenceSession(ResNet18Converter.DefaultModelPath(), o));
    });

    /// <summary>ONNX Runtime on the original models: RGB 0-255, [3,224,224] row-major in; the 512 pooled features out.</summary>
    public static float[] OrtFeatures(float[] rgb)
    {
        if (rgb.Length != 3 * Size * Size) throw new ArgumentException("expected 3x224x224 values");
        var (prep, net) = Sessions.Value;
        var input = new DenseTensor<float>(rgb.ToArray(), [1, 3, Size, Size]);
        using var prepOut = prep.Run([NamedOnnxValue.CreateFromTensor(prep.InputMetadata.Keys.Single(), input)]);
        var bgr = prepOut.Single().AsTensor<float>().ToArray();
        var netIn = new DenseTensor<float>(bgr, [1, 3, Size, Size]);
        using var netOut = net.Run([NamedOnnxValue.CreateFromTensor(net.InputMetadata.Keys.Single(), netIn)]);
        float[] features = netOut.Single().AsTensor<float>().ToArray();
        if (features.Length != 512) throw new InvalidOperationException($"ResNet18.onnx gave {features.Length} values");
        return features;
    }

    /// <summary>Deterministic synthetic RGB image in 0-255: kind 0 smooth gradients + rings, kind 1 blocks + LCG noise.</summary>
    public static float[] SyntheticImage(int kind)
    {
        var img = new float[3 * Size * Size];
        uint state = 12345u + (uint)kind * 7919u;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < Size; y++)
                for (int x = 0; x < Size; x++)
                {
                    double v;
                    if (kind == 0)
                    {
                        double r = Math.Sqrt((x - 100.0) * (x - 100.0) + (y - 130.0) * (y - 130.0));
                        v = 128 + 60 * Math.Sin(r / (6 + 2 * c)) + 0.25 * (x - 112) * (c - 1) + 0.2 * (y - 112);
                    }
                    else
                    {
                        state = state * 1664525u + 1013904223u;
                        double noise = (state >> 8) / (double)(1 << 24) * 80 - 40;
                        bool block = ((x / 28) + (y / 28) + c) % 2 == 0;
                        v = (block ? 180 : 60) + noise;
                    }
                    img[(c * Size + y) * Size + x] = (float)Math.Clamp(v, 0, 255);
                }
        return img;
    }

    /// <summary>Weights and metadata of a converted file.</summary>
    public sealed class Weights
    {
        public required Dictionary<string, float[]> Tensors { get; init; }
        public required Dictionary<string, long[]> Shapes { get; init; }
        public required Dictionary<string, string> Metadata { get; init; }

        public static Weights Load(string path)
        {
            using var map = TensorMap.Load(path);
            var t = new Dictionary<string, float[]>();
            var s = new Dictionary<string, long[]>();
            foreach (string n in map.Names) { t[n] = map.GetFloat32(n); s[n] = map.Info(n).Shape; }
            return new Weights { Tensors = t, Shapes = s, Metadata = SafetensorsMetadata.Read(path) };
        }

        public int[] Ints(string key) => Metadata[key].Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
    }

    /// <summary>A [C,H,W] feature map.</summary>
    public sealed record Map(int C, int H, int W, float[] Data);

    /// <summary>Naive forward pass of the converted network: RGB 0-255 [3,224,224] in, 512 pooled features out.</summary>
    public static float[] ReferenceFeatures(Weights w, float[] rgb)
    {
        Map x = StemInput(w, rgb);
        x = ConvBn(w, x, "conv1", "bn1", relu: true);
        x = MaxPool(x, w.Ints("kernel.maxpool"), w.Ints("strides.maxpool"), w.Ints("pads.maxpool"));
        int[] blocks = w.Ints("blocks");
        for (int s = 1; s <= blocks.Length; s++)
            for (int b = 0; b < blocks[s - 1]; b++)
            {
                string p = $"layer{s}.{b}";
                Map h = ConvBn(w, x, $"{p}.conv1", $"{p}.bn1", relu: true);
                h = ConvBn(w, h, $"{p}.conv2", $"{p}.bn2", relu: false);
                Map sc = w.Tensors.ContainsKey($"{p}.downsample.0.weight")
                    ? ConvBn(w, x, $"{p}.downsample.0", $"{p}.downsample.1", relu: false) : x;
                var o = new float[h.Data.Length];
                for (int i = 0; i < o.Length; i++) o[i] = Math.Max(0f, h.Data[i] + sc.Data[i]);
                x = h with { Data = o };
            }
        // Global average (the export's fixed 7x7 pool at 224x224).
        int[] k = w.Ints("kernel.avgpool");
        if (k[0] != x.H || k[1] != x.W) throw new InvalidOperationException($"avgpool {k[0]}x{k[1]} on {x.H}x{x.W}");
        var f = new float[x.C];
        for (int c = 0; c < x.C; c++)
        {
            double sum = 0;
            for (int i = 0; i < x.H * x.W; i++) sum += x.Data[c * x.H * x.W + i];
            f[c] = (float)(sum / (x.H * x.W));
        }
        return f;
    }

    /// <summary>RGB 0-255 -> the model's input: channel reorder (preprocess.channel_perm) minus preprocess.mean.</summary>
    public static Map StemInput(Weights w, float[] rgb)
    {
        int[] perm = w.Ints("preprocess.channel_perm");
        float[] mean = w.Tensors["preprocess.mean"];
        int plane = Size * Size;
        var d = new float[3 * plane];
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < plane; i++)
                d[c * plane + i] = rgb[perm[c] * plane + i] - mean[c * plane + i];
        return new Map(3, Size, Size, d);
    }

    /// <summary>Conv (pads/strides from metadata, no bias unless NAME.bias exists) then inference BN, optional ReLU.</summary>
    public static Map ConvBn(Weights w, Map x, string conv, string bn, bool relu)
    {
        float[] wt = w.Tensors[$"{conv}.weight"];
        long[] ws = w.Shapes[$"{conv}.weight"];
        int oc = (int)ws[0], ic = (int)ws[1], kh = (int)ws[2], kw = (int)ws[3];
        if (ic != x.C) throw new InvalidOperationException($"{conv}: {ic} input channels, map has {x.C}");
        int[] st = w.Ints($"strides.{conv}"), pd = w.Ints($"pads.{conv}");
        int padT = pd[0], padL = pd[1], padB = pd[2], padR = pd[3];
        int oh = (x.H + padT + padB - kh) / st[0] + 1, ow = (x.W + padL + padR - kw) / st[1] + 1;
        float[] gamma = w.Tensors[$"{bn}.weight"], beta = w.Tensors[$"{bn}.bias"];
        float[] mu = w.Tensors[$"{bn}.running_mean"], var = w.Tensors[$"{bn}.running_var"];
        w.Tensors.TryGetValue($"{conv}.bias", out float[]? cb);
        double eps = double.Parse(w.Metadata.TryGetValue($"eps.{bn}", out string? e) ? e : w.Metadata["bn.eps"], CultureInfo.InvariantCulture);
        var y = new float[oc * oh * ow];
        int sh = st[0], sw = st[1];
        Parallel.For(0, oc, o =>
        {
            var acc = new double[oh * ow];
            for (int i = 0; i < ic; i++)
            {
                int inBase = i * x.H * x.W;
                for (int a = 0; a < kh; a++)
                    for (int b = 0; b < kw; b++)
                    {
                        double wv = wt[((o * ic + i) * kh + a) * kw + b];
                        // Output columns whose input column is inside the image.
                        int owLo = Math.Max(0, (padL - b + sw - 1) / sw);
                        int owHi = Math.Min(ow, (x.W - 1 + padL - b) / sw + 1);
                        for (int r = 0; r < oh; r++)
                        {
                            int iy = r * sh - padT + a;
                            if (iy < 0 || iy >= x.H) continue;
                            int row = inBase + iy * x.W;
                            int accRow = r * ow;
                            for (int q = owLo; q < owHi; q++)
                                acc[accRow + q] += wv * x.Data[row + q * sw - padL + b];
                        }
                    }
            }
            double scale = gamma[o] / Math.Sqrt(var[o] + eps);
            double bias0 = cb?[o] ?? 0;
            for (int j = 0; j < acc.Length; j++)
            {
                double v = (acc[j] + bias0 - mu[o]) * scale + beta[o];
                y[o * oh * ow + j] = (float)(relu ? Math.Max(0, v) : v);
            }
        });
        return new Map(oc, oh, ow, y);
    }

    /// <summary>Max pool; padded positions never win (ONNX pads with -inf).</summary>
    public static Map MaxPool(Map x, int[] k, int[] st, int[] pd)
    {
        int oh = (x.H + pd[0] + pd[2] - k[0]) / st[0] + 1, ow = (x.W + pd[1] + pd[3] - k[1]) / st[1] + 1;
        var y = new float[x.C * oh * ow];
        for (int c = 0; c < x.C; c++)
            for (int r = 0; r < oh; r++)
                for (int q = 0; q < ow; q++)
                {
                    float m = float.NegativeInfinity;
                    for (int a = 0; a < k[0]; a++)
                        for (int b = 0; b < k[1]; b++)
                        {
                            int iy = r * st[0] - pd[0] + a, ix = q * st[1] - pd[1] + b;
                            if (iy >= 0 && iy < x.H && ix >= 0 && ix < x.W) m = Math.Max(m, x.Data[(c * x.H + iy) * x.W + ix]);
                        }
                    y[(c * oh + r) * ow + q] = m;
                }
        return new Map(x.C, oh, ow, y);
    }
}
