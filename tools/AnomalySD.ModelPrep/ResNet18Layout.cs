namespace AnomalySD.ModelPrep;

/// <summary>
/// torchvision's resnet18 state-dict layout (feature part: no <c>fc.*</c>, no <c>*.num_batches_tracked</c>),
/// written out as a table so a conversion can be checked name by name and shape by shape.
/// </summary>
public static class ResNet18Layout
{
    /// <summary>torchvision.models.resnet18().state_dict() without fc.* and num_batches_tracked, in its order.</summary>
    public static readonly IReadOnlyList<(string Name, long[] Shape)> TorchvisionFeatures = Build();

    private static List<(string, long[])> Build()
    {
        var t = new List<(string, long[])>();
        void Conv(string n, long o, long i, long k) => t.Add(($"{n}.weight", [o, i, k, k]));
        void Bn(string n, long c)
        {
            t.Add(($"{n}.weight", [c])); t.Add(($"{n}.bias", [c]));
            t.Add(($"{n}.running_mean", [c])); t.Add(($"{n}.running_var", [c]));
        }
        Conv("conv1", 64, 3, 7); Bn("bn1", 64);
        // layer1: 64 -> 64, no downsample
        Conv("layer1.0.conv1", 64, 64, 3); Bn("layer1.0.bn1", 64); Conv("layer1.0.conv2", 64, 64, 3); Bn("layer1.0.bn2", 64);
        Conv("layer1.1.conv1", 64, 64, 3); Bn("layer1.1.bn1", 64); Conv("layer1.1.conv2", 64, 64, 3); Bn("layer1.1.bn2", 64);
        // layer2: 64 -> 128, stride 2, 1x1 downsample
        Conv("layer2.0.conv1", 128, 64, 3); Bn("layer2.0.bn1", 128); Conv("layer2.0.conv2", 128, 128, 3); Bn("layer2.0.bn2", 128);
        Conv("layer2.0.downsample.0", 128, 64, 1); Bn("layer2.0.downsample.1", 128);
        Conv("layer2.1.conv1", 128, 128, 3); Bn("layer2.1.bn1", 128); Conv("layer2.1.conv2", 128, 128, 3); Bn("layer2.1.bn2", 128);
        // layer3: 128 -> 256
        Conv("layer3.0.conv1", 256, 128, 3); Bn("layer3.0.bn1", 256); Conv("layer3.0.conv2", 256, 256, 3); Bn("layer3.0.bn2", 256);
        Conv("layer3.0.downsample.0", 256, 128, 1); Bn("layer3.0.downsample.1", 256);
        Conv("layer3.1.conv1", 256, 256, 3); Bn("layer3.1.bn1", 256); Conv("layer3.1.conv2", 256, 256, 3); Bn("layer3.1.bn2", 256);
        // layer4: 256 -> 512
        Conv("layer4.0.conv1", 512, 256, 3); Bn("layer4.0.bn1", 512); Conv("layer4.0.conv2", 512, 512, 3); Bn("layer4.0.bn2", 512);
        Conv("layer4.0.downsample.0", 512, 256, 1); Bn("layer4.0.downsample.1", 512);
        Conv("layer4.1.conv1", 512, 512, 3); Bn("layer4.1.bn1", 512); Conv("layer4.1.conv2", 512, 512, 3); Bn("layer4.1.bn2", 512);
        return t;
    }

    /// <summary>Channels of stage 1..4.</summary>
    public static readonly int[] StageChannels = [64, 128, 256, 512];

    /// <summary>
    /// Shape a key must have, for the torchvision keys and for extra BasicBlocks beyond torchvision's two per
    /// stage (<c>layerS.B.*</c> with B &gt;= 2: same shapes as <c>layerS.1.*</c>). Null for anything else.
    /// </summary>
    public static long[]? ExpectedShape(string name)
    {
        foreach (var (n, s) in TorchvisionFeatures)
            if (n == name) return s;
        var parts = name.Split('.');
        if (parts.Length == 4 && parts[0].StartsWith("layer", StringComparison.Ordinal)
            && int.TryParse(parts[0].AsSpan(5), out int stage) && stage is >= 1 and <= 4
            && int.TryParse(parts[1], out int block) && block >= 2)
        {
            string twin = $"layer{stage}.1.{parts[2]}.{parts[3]}";
            foreach (var (n, s) in TorchvisionFeatures)
                if (n == twin) return s;
        }
        return null;
    }
}
