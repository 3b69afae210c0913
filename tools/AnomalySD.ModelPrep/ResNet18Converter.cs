using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using AnomalySD.Engine;
using Google.Protobuf;
using Onnx;

namespace AnomalySD.ModelPrep;

/// <summary>A conversion failed; the message names the file and the problem.</summary>
public sealed class ModelPrepException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>One converted tensor (float32, row-major).</summary>
public sealed record NamedTensor(string Name, float[] Data, long[] Shape);

/// <summary>Result of reading the ONNX files: tensors in torchvision names plus string metadata.</summary>
public sealed class ConvertedModel
{
    public List<NamedTensor> Tensors { get; } = [];
    public SortedDictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);
    /// <summary>Things a reader of the conversion should know (extra blocks, conv biases, ...).</summary>
    public List<string> Notes { get; } = [];
    /// <summary>BasicBlocks per stage, e.g. [2,2,2,3] for the CNTK export.</summary>
    public int[] Blocks { get; set; } = [];
    public NamedTensor this[string name] => Tensors.First(t => t.Name == name);
}

/// <summary>
/// Converts the CNTK ImageNet ResNet18 shipped in Microsoft.ML.DnnImageFeaturizer.ResNet18 (ResNet18.onnx +
/// ResNetPreprocess.onnx) to a safetensors file with torchvision resnet18 names.
///
/// The graph is matched by structure, not by node order (the export lists a block's downsample conv before its
/// conv1): stem Conv -> BN -> Relu -> MaxPool, then one BasicBlock per Add node (main branch
/// Conv -> BN -> Relu -> Conv -> BN, shortcut identity or Conv 1x1 -> BN), then AveragePool. A block with a
/// downsample starts a new stage. Every Conv and BatchNormalization node must be used exactly once.
///
/// Metadata written (all strings): pads.NAME / strides.NAME / kernel.NAME for every conv (ONNX order
/// "top,left,bottom,right"), the max pool and the average pool; bn.eps; blocks ("2,2,2,3"); the input
/// convention (channel order, range, mean per channel, std); source file names and SHA-256.
/// </summary>
public static class ResNet18Converter
{
    public const string FileName = "resnet18_imagenet.safetensors";
    public const string PackageId = "Microsoft.ML.DnnImageFeaturizer.ResNet18";
    public const string PackageVersion = "0.23.1";
    public const string ModelRelativePath = "tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx";
    public const string PreprocessRelativePath = "tools/DnnImageModels/ResNetPrepOnnx/ResNetPreprocess.onnx";
    public const string FormatTag = "anomalysd.resnet18_imagenet.v1";

    // ---------------------------------------------------------------- locating inputs

    /// <summary>
    /// The restored package folder: the ANOMALYSD_RESNET18_PACKAGE environment variable if set, else the path
    /// MSBuild knew at build time ($(PkgMicrosoft_ML_DnnImageFeaturizer_ResNet18)), else the NuGet global
    /// packages folder.
    /// </summary>
    public static string PackageDirectory()
    {
        string? env = Environment.GetEnvironmentVariable("ANOMALYSD_RESNET18_PACKAGE");
        if (!string.IsNullOrWhiteSpace(env)) return env;
        string? baked = AssemblyMetadata("ResNet18PackageDir");
        if (!string.IsNullOrWhiteSpace(baked) && Directory.Exists(baked)) return baked;
        string root = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        return Path.Combine(root, PackageId.ToLowerInvariant(), PackageVersion);
    }

    public static string DefaultModelPath() => Path.Combine(PackageDirectory(), ModelRelativePath);
    public static string DefaultPreprocessPath() => Path.Combine(PackageDirectory(), PreprocessRelativePath);

    /// <summary>Default output: next to the native library (the AnomalySDNativeDir the bindings ship it from).</summary>
    public static string DefaultOutputPath()
    {
        string? nativeDir = AssemblyMetadata("AnomalySDNativeDir");
        if (!string.IsNullOrWhiteSpace(nativeDir) && Directory.Exists(nativeDir))
            return Path.Combine(Path.GetFullPath(nativeDir), FileName);
        // Fall back to wherever the bindings would load the library from.
        foreach (string candidate in AnomalySD.Native.NativeLibraryResolver.Candidates())
            if (File.Exists(candidate)) return Path.Combine(Path.GetDirectoryName(candidate)!, FileName);
        return Path.Combine(AppContext.BaseDirectory, FileName);
    }

    private static string? AssemblyMetadata(string key) =>
        typeof(ResNet18Converter).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == key)?.Value;

    // ---------------------------------------------------------------- entry points

    /// <summary>Reads both ONNX files and writes the safetensors file atomically.</summary>
    public static ConvertedModel ConvertToFile(string modelPath, string preprocessPath, string outPath)
    {
        ConvertedModel m = Read(modelPath, preprocessPath);
        string? dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        using var map = TensorMap.Create();
        foreach (var t in m.Tensors) map.SetFloat32(t.Name, t.Data, t.Shape);
        map.Save(outPath, m.Metadata);
        return m;
    }

    /// <summary>Reads and checks both ONNX files; nothing is written.</summary>
    public static ConvertedModel Read(string modelPath, string preprocessPath)
    {
        var m = new ConvertedModel();
        ModelProto model = Load(modelPath);
        ReadBackbone(model, modelPath, m);
        ModelProto prep = Load(preprocessPath);
        ReadPreprocess(prep, preprocessPath, m);
        m.Metadata["source.model"] = $"{PackageId} {PackageVersion} {ModelRelativePath}";
        m.Metadata["source.model.sha256"] = Sha256(modelPath);
        m.Metadata["source.model.producer"] = $"{model.ProducerName} {model.ProducerVersion}".Trim();
        m.Metadata["source.preprocess"] = $"{PackageId} {PackageVersion} {PreprocessRelativePath}";
        m.Metadata["source.preprocess.sha256"] = Sha256(preprocessPath);
        m.Metadata["format"] = FormatTag;
        m.Metadata["notes"] = string.Join(" | ", m.Notes);
        return m;
    }

    /// <summary>Parses an ONNX file; a missing, empty or corrupt file gives a <see cref="ModelPrepException"/> naming it.</summary>
    public static ModelProto Load(string path)
    {
        if (!File.Exists(path))
            throw new ModelPrepException($"ONNX file not found: {path} (restore the {PackageId} {PackageVersion} package, " +
                                         "or set ANOMALYSD_RESNET18_PACKAGE to its folder)");
        ModelProto model;
        try
        {
            using var s = File.OpenRead(path);
            model = ModelProto.Parser.ParseFrom(s);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or IOException)
        {
            throw new ModelPrepException($"{path}: not a readable ONNX model ({e.Message})", e);
        }
        if (model.Graph is null || model.Graph.Node.Count == 0)
            throw new ModelPrepException($"{path}: not an ONNX model (no graph nodes)");
        return model;
    }

    // ---------------------------------------------------------------- backbone

    private sealed class Graph
    {
        public required string File;
        public required GraphProto G;
        public Dictionary<string, NodeProto> Producer = [];
        public Dictionary<string, List<NodeProto>> Consumers = [];
        public Dictionary<string, TensorProto> Init = [];
        public HashSet<NodeProto> Used = new(ReferenceEqualityComparer.Instance);

        public ModelPrepException Fail(string what) => new($"{File}: {what}");

        public NodeProto? Prod(string tensor, string op) =>
            Producer.TryGetValue(tensor, out var n) && n.OpType == op ? n : null;

        public NodeProto OnlyConsumer(string tensor, string op)
        {
            var list = Consumers.GetValueOrDefault(tensor)?.Where(n => n.OpType == op).ToList() ?? [];
            if (list.Count != 1)
                throw Fail($"expected exactly one {op} node reading '{tensor}', found {list.Count}");
            return list[0];
        }
    }

    private static void ReadBackbone(ModelProto model, string file, ConvertedModel m)
    {
        var g = new Graph { File = file, G = model.Graph };
        foreach (var t in g.G.Initializer) g.Init[t.Name] = t;
        foreach (var n in g.G.Node)
        {
            foreach (string o in n.Output) g.Producer[o] = n;
            foreach (string i in n.Input)
            {
                if (!g.Consumers.TryGetValue(i, out var l)) g.Consumers[i] = l = [];
                l.Add(n);
            }
        }
        var inputs = g.G.Input.Where(i => !g.Init.ContainsKey(i.Name)).ToList();
        if (inputs.Count != 1) throw g.Fail($"expected one graph input, found {inputs.Count}");
        m.Metadata["input.shape"] = ShapeOf(inputs[0]);
        if (g.G.Output.Count != 1) throw g.Fail($"expected one graph output, found {g.G.Output.Count}");
        m.Metadata["output.shape"] = ShapeOf(g.G.Output[0]);

        var eps = new SortedDictionary<string, float>(StringComparer.Ordinal);

        // Stem.
        NodeProto conv1 = g.OnlyConsumer(inputs[0].Name, "Conv");
        string x = Stem(g, m, eps, conv1);

        // Blocks, one per Add node, in graph order.
        int stage = 1, block = -1;
        var blocks = new List<int> { 0 };
        foreach (NodeProto add in g.G.Node.Where(n => n.OpType == "Add"))
        {
            if (add.Input.Count != 2) throw g.Fail($"Add node '{add.Name}' has {add.Input.Count} inputs");
            var mains = Enumerable.Range(0, 2).Select(i => (i, chain: MainBranch(g, add.Input[i]))).Where(p => p.chain is not null).ToList();
            if (mains.Count != 1)
                throw g.Fail($"Add node '{add.Name}': cannot tell the residual branch (Conv-BN-Relu-Conv-BN) from the shortcut ({mains.Count} candidates)");
            var (c1, b1, r1, c2, b2) = mains[0].chain!.Value;
            string shortcut = add.Input[1 - mains[0].i];
            string blockIn = c1.Input[0];
            if (blockIn != x)
                throw g.Fail($"block at Add '{add.Name}' reads '{blockIn}' but the previous block's output is '{x}'");
            (NodeProto conv, NodeProto bn)? ds = null;
            if (shortcut != blockIn)
            {
                NodeProto? dbn = g.Prod(shortcut, "BatchNormalization");
                NodeProto? dconv = dbn is null ? null : g.Prod(dbn.Input[0], "Conv");
                if (dconv is null || dconv.Input[0] != blockIn)
                    throw g.Fail($"Add '{add.Name}': shortcut '{shortcut}' is neither the block input nor Conv->BN of it");
                ds = (dconv, dbn!);
            }
            if (ds is not null && block >= 0) { stage++; block = 0; blocks.Add(0); }
            else block++;
            if (stage > 4) throw g.Fail("more than 4 stages of downsampling blocks");
            blocks[^1]++;
            string p = $"layer{stage}.{block}";
            Conv(g, m, c1, $"{p}.conv1"); Bn(g, m, eps, b1, $"{p}.bn1");
            g.Used.Add(r1);
            Conv(g, m, c2, $"{p}.conv2"); Bn(g, m, eps, b2, $"{p}.bn2");
            if (ds is not null) { Conv(g, m, ds.Value.conv, $"{p}.downsample.0"); Bn(g, m, eps, ds.Value.bn, $"{p}.downsample.1"); }
            g.Used.Add(add);
            NodeProto relu = g.OnlyConsumer(add.Output[0], "Relu");
            g.Used.Add(relu);
            x = relu.Output[0];
        }
        if (blocks.Count != 4) throw g.Fail($"found {blocks.Count} stages, ResNet18 has 4");
        m.Blocks = [.. blocks];
        m.Metadata["blocks"] = string.Join(",", blocks);

        // Head: global average pool (fixed kernel in the export).
        NodeProto pool = g.OnlyConsumer(x, "AveragePool");
        g.Used.Add(pool);
        if (pool.Output[0] != g.G.Output[0].Name) throw g.Fail($"AveragePool '{pool.Name}' is not the graph output");
        m.Metadata["kernel.avgpool"] = Join(Ints(pool, "kernel_shape"));
        m.Metadata["strides.avgpool"] = Join(Ints(pool, "strides") ?? [1, 1]);
        m.Metadata["pads.avgpool"] = Join(Ints(pool, "pads") ?? [0, 0, 0, 0]);
        m.Metadata["count_include_pad.avgpool"] = (Int(pool, "count_include_pad") ?? 0).ToString(CultureInfo.InvariantCulture);

        var unused = g.G.Node.Where(n => !g.Used.Contains(n)).ToList();
        if (unused.Count > 0)
            throw g.Fail("nodes not matched to ResNet18: " + string.Join(", ", unused.Select(n => $"{n.OpType} '{n.Name}'")));

        // bn.eps: one value when uniform (the export: 1e-5 everywhere), per layer otherwise.
        var distinct = eps.Values.Distinct().ToList();
        if (distinct.Count == 1) m.Metadata["bn.eps"] = F(distinct[0]);
        else
        {
            m.Metadata["bn.eps"] = "per-layer";
            foreach (var (k, v) in eps) m.Metadata[$"eps.{k}"] = F(v);
        }
        m.Metadata["pads.format"] = "ONNX pads: top,left,bottom,right (begin H, begin W, end H, end W)";
        m.Metadata["pads.torchvision"] = "begin pads equal torchvision's; the smaller end pads of the stride-2 layers are never " +
                                         "read at even input sizes (224x224), so symmetric padding gives the same features there";

        CheckLayout(g, m);
    }

    private static string Stem(Graph g, ConvertedModel m, SortedDictionary<string, float> eps, NodeProto conv1)
    {
        Conv(g, m, conv1, "conv1");
        NodeProto bn1 = g.OnlyConsumer(conv1.Output[0], "BatchNormalization");
        Bn(g, m, eps, bn1, "bn1");
        NodeProto relu = g.OnlyConsumer(bn1.Output[0], "Relu");
        g.Used.Add(relu);
        NodeProto mp = g.OnlyConsumer(relu.Output[0], "MaxPool");
        g.Used.Add(mp);
        m.Metadata["kernel.maxpool"] = Join(Ints(mp, "kernel_shape"));
        m.Metadata["strides.maxpool"] = Join(Ints(mp, "strides") ?? [1, 1]);
        m.Metadata["pads.maxpool"] = Join(Ints(mp, "pads") ?? [0, 0, 0, 0]);
        CheckAutoPad(g, mp);
        return mp.Output[0];
    }

    private static (NodeProto c1, NodeProto b1, NodeProto r1, NodeProto c2, NodeProto b2)? MainBranch(Graph g, string tensor)
    {
        NodeProto? b2 = g.Prod(tensor, "BatchNormalization");
        NodeProto? c2 = b2 is null ? null : g.Prod(b2.Input[0], "Conv");
        NodeProto? r1 = c2 is null ? null : g.Prod(c2.Input[0], "Relu");
        NodeProto? b1 = r1 is null ? null : g.Prod(r1.Input[0], "BatchNormalization");
        NodeProto? c1 = b1 is null ? null : g.Prod(b1.Input[0], "Conv");
        return c1 is null ? null : (c1, b1!, r1!, c2!, b2!);
    }

    private static void Conv(Graph g, ConvertedModel m, NodeProto n, string name)
    {
        if (!g.Used.Add(n)) throw g.Fail($"Conv '{n.Name}' matched twice");
        CheckAutoPad(g, n);
        var w = Tensor(g, n, 1, $"{name}.weight");
        long[] kernel = Ints(n, "kernel_shape") ?? [w.Shape[2], w.Shape[3]];
        if (w.Shape.Length != 4 || kernel.Length != 2 || kernel[0] != w.Shape[2] || kernel[1] != w.Shape[3])
            throw g.Fail($"Conv '{n.Name}' ({name}): kernel_shape [{Join(kernel)}] does not match weight [{Join(w.Shape)}]");
        if ((Int(n, "group") ?? 1) != 1) throw g.Fail($"Conv '{n.Name}' ({name}): group {Int(n, "group")} (ResNet18 has none)");
        if ((Ints(n, "dilations") ?? [1, 1]).Any(d => d != 1)) throw g.Fail($"Conv '{n.Name}' ({name}): dilations [{Join(Ints(n, "dilations")!)}]");
        m.Tensors.Add(w);
        m.Metadata[$"pads.{name}"] = Join(Ints(n, "pads") ?? [0, 0, 0, 0]);
        m.Metadata[$"strides.{name}"] = Join(Ints(n, "strides") ?? [1, 1]);
        m.Metadata[$"kernel.{name}"] = Join(kernel);
        if (n.Input.Count > 2 && n.Input[2].Length > 0)
        {
            // torchvision convs have no bias: keep it under an extra key so nothing is lost, and say so.
            m.Tensors.Add(Tensor(g, n, 2, $"{name}.bias"));
            m.Notes.Add($"{name} has a bias in the export (stored as {name}.bias; torchvision has none)");
        }
    }

    private static void Bn(Graph g, ConvertedModel m, SortedDictionary<string, float> eps, NodeProto n, string name)
    {
        if (n.OpType != "BatchNormalization" || !g.Used.Add(n)) throw g.Fail($"node '{n.Name}' ({name}) is not an unused BatchNormalization");
        if (n.Input.Count != 5) throw g.Fail($"BatchNormalization '{n.Name}' ({name}) has {n.Input.Count} inputs, expected X, scale, B, mean, var");
        if (n.Output.Count != 1) throw g.Fail($"BatchNormalization '{n.Name}' ({name}) is in training mode ({n.Output.Count} outputs)");
        if ((Int(n, "spatial") ?? 1) != 1) throw g.Fail($"BatchNormalization '{n.Name}' ({name}): spatial=0 is not supported");
        eps[name] = Attr(n, "epsilon")?.F ?? 1e-5f;
        string[] suffix = ["weight", "bias", "running_mean", "running_var"];
        for (int i = 0; i < 4; i++) m.Tensors.Add(Tensor(g, n, i + 1, $"{name}.{suffix[i]}"));
        if (m[$"{name}.running_var"].Data.Any(v => !(v >= 0)))
            throw g.Fail($"BatchNormalization '{n.Name}' ({name}): running variance has negative or NaN values");
    }

    private static void CheckAutoPad(Graph g, NodeProto n)
    {
        string autoPad = Attr(n, "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
        if (autoPad is not ("NOTSET" or "VALID" or ""))
            throw g.Fail($"{n.OpType} '{n.Name}': auto_pad={autoPad} (explicit pads expected)");
    }

    private static NamedTensor Tensor(Graph g, NodeProto n, int input, string name)
    {
        if (input >= n.Input.Count || !g.Init.TryGetValue(n.Input[input], out TensorProto? t))
            throw g.Fail($"{n.OpType} '{n.Name}' ({name}): input {input} is not an initializer");
        return new NamedTensor(name, Floats(t, g.File), [.. t.Dims]);
    }

    /// <summary>Values of a float tensor initializer (float_data or little-endian raw_data).</summary>
    public static float[] Floats(TensorProto t, string file)
    {
        if (t.DataType != (int)TensorProto.Types.DataType.Float)
            throw new ModelPrepException($"{file}: initializer '{t.Name}' has data type {t.DataType}, expected float32");
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new ModelPrepException($"{file}: initializer '{t.Name}' uses external data (not supported)");
        long count = t.Dims.Aggregate(1L, (a, b) => a * b);
        float[] data;
        if (t.RawData.Length > 0)
        {
            if (t.RawData.Length != count * 4)
                throw new ModelPrepException($"{file}: initializer '{t.Name}' has {t.RawData.Length} bytes for shape [{Join(t.Dims)}]");
            data = new float[count];
            ReadOnlySpan<byte> raw = t.RawData.Span;
            for (long i = 0; i < count; i++)
                data[i] = System.Buffers.Binary.BinaryPrimitives.ReadSingleLittleEndian(raw.Slice((int)(i * 4), 4));
        }
        else
        {
            if (t.FloatData.Count != count)
                throw new ModelPrepException($"{file}: initializer '{t.Name}' has {t.FloatData.Count} values for shape [{Join(t.Dims)}]");
            data = [.. t.FloatData];
        }
        return data;
    }

    /// <summary>Every torchvision key with its shape; extra keys only as extra BasicBlocks or conv biases.</summary>
    private static void CheckLayout(Graph g, ConvertedModel m)
    {
        var have = m.Tensors.ToDictionary(t => t.Name, t => t.Shape);
        var problems = new List<string>();
        foreach (var (name, shape) in ResNet18Layout.TorchvisionFeatures)
        {
            if (!have.TryGetValue(name, out long[]? s)) problems.Add($"{name} missing");
            else if (!s.SequenceEqual(shape)) problems.Add($"{name} is [{Join(s)}], torchvision has [{Join(shape)}]");
        }
        foreach (var (name, s) in have)
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal) && have.ContainsKey(name[..^5] + ".weight")
                && have[name[..^5] + ".weight"].Length == 4)
            {
                long outCh = have[name[..^5] + ".weight"][0];
                if (s.Length != 1 || s[0] != outCh) problems.Add($"conv bias {name} is [{Join(s)}], expected [{outCh}]");
                continue;
            }
            long[]? exp = ResNet18Layout.ExpectedShape(name);
            if (exp is null) problems.Add($"{name} [{Join(s)}] is not a ResNet18 key");
            else if (!s.SequenceEqual(exp)) problems.Add($"{name} is [{Join(s)}], expected [{Join(exp)}]");
        }
        if (problems.Count > 0)
            throw g.Fail("does not match torchvision resnet18: " + string.Join("; ", problems));
        var extra = have.Keys.Where(k => !ResNet18Layout.TorchvisionFeatures.Any(t => t.Name == k)).ToList();
        if (extra.Count > 0)
        {
            m.Notes.Add($"blocks per stage {m.Metadata["blocks"]} (torchvision resnet18: 2,2,2,2); extra keys: {string.Join(", ", extra)}");
            m.Metadata["extra_keys"] = string.Join(",", extra);
        }
    }

    // ---------------------------------------------------------------- preprocess

    private static void ReadPreprocess(ModelProto model, string file, ConvertedModel m)
    {
        GraphProto g = model.Graph;
        var init = g.Initializer.ToDictionary(t => t.Name);
        var inputs = g.Input.Where(i => !init.ContainsKey(i.Name)).ToList();
        if (inputs.Count != 1 || g.Output.Count != 1)
            throw new ModelPrepException($"{file}: expected one input and one output, found {inputs.Count} and {g.Output.Count}");
        // Track which original channel each tensor's channels are: null = not a channel view.
        var channels = new Dictionary<string, int[]> { [inputs[0].Name] = [0, 1, 2] };
        var channelNames = new Dictionary<string, string>();
        float[]? mean = null; long[]? meanShape = null;
        foreach (NodeProto n in g.Node)
        {
            switch (n.OpType)
            {
                case "Split" when (Int(n, "axis") ?? 0) == 1 && channels.TryGetValue(n.Input[0], out int[]? src):
                {
                    long[] split = Ints(n, "split") ?? Enumerable.Repeat(1L, n.Output.Count).ToArray();
                    int at = 0;
                    for (int i = 0; i < n.Output.Count; i++)
                    {
                        channels[n.Output[i]] = src.Skip(at).Take((int)split[i]).ToArray();
                        at += (int)split[i];
                        if (split[i] == 1) channelNames[n.Output[i]] = n.Output[i];
                    }
                    break;
                }
                case "Concat" when (Int(n, "axis") ?? 0) == 1 && n.Input.All(channels.ContainsKey):
                    channels[n.Output[0]] = n.Input.SelectMany(i => channels[i]).ToArray();
                    m.Metadata["preprocess.concat_inputs"] = string.Join(",", n.Input);
                    break;
                case "Sub" when channels.ContainsKey(n.Input[0]) && init.ContainsKey(n.Input[1]) && mean is null:
                {
                    TensorProto t = init[n.Input[1]];
                    mean = Floats(t, file);
                    meanShape = [.. t.Dims];
                    channels[n.Output[0]] = channels[n.Input[0]];
                    break;
                }
                default:
                    throw new ModelPrepException($"{file}: unsupported preprocessing node {n.OpType} '{n.Name}' " +
                                                 $"({string.Join(", ", n.Input)} -> {string.Join(", ", n.Output)})");
            }
        }
        string outName = g.Output[0].Name;
        if (!channels.TryGetValue(outName, out int[]? perm) || perm.Length != 3)
            throw new ModelPrepException($"{file}: cannot follow the 3 channels from input to output");
        if (mean is null || meanShape is null) throw new ModelPrepException($"{file}: no mean subtraction found");

        // The original input's channels are named by the Split outputs (RInp, GInp, BInp -> R,G,B); without
        // such names assume RGB, ML.NET's pixel order.
        string[] origNames = ["R", "G", "B"];
        var named = channelNames.Keys.Where(k => channels[k].Length == 1).OrderBy(k => channels[k][0])
            .Select(k => char.ToUpperInvariant(k[0]).ToString()).ToArray();
        if (named.Length == 3 && named.OrderBy(c => c, StringComparer.Ordinal).SequenceEqual(["B", "G", "R"])) origNames = named;
        string order = string.Concat(perm.Select(c => origNames[c]));
        m.Metadata["preprocess.input_order"] = string.Concat(origNames);
        m.Metadata["input.channel_order"] = order;                 // of ResNet18.onnx's input: "BGR"
        m.Metadata["preprocess.channel_perm"] = string.Join(",", perm);
        m.Metadata["input.range"] = "0-255";
        m.Metadata["input.std"] = "none";

        // Mean as [3,224,224] in the model's channel order (the Sub comes after the reorder).
        long plane = 224 * 224;
        float[] meanImage = new float[3 * plane];
        long[] ms = meanShape.SkipWhile((d, i) => d == 1 && meanShape.Length - i > 3).ToArray();
        if (ms.Length == 3 && ms[0] == 3 && ms[1] == 224 && ms[2] == 224) Array.Copy(mean, meanImage, meanImage.Length);
        else if (mean.Length == 3) for (int c = 0; c < 3; c++) Array.Fill(meanImage, mean[c], (int)(c * plane), (int)plane);
        else throw new ModelPrepException($"{file}: mean of shape [{Join(meanShape)}] is neither 3x224x224 nor per channel");
        m.Tensors.Add(new NamedTensor("preprocess.mean", meanImage, [3, 224, 224]));
        var perChannel = new double[3];
        double maxDev = 0;
        for (int c = 0; c < 3; c++)
        {
            perChannel[c] = meanImage.AsSpan((int)(c * plane), (int)plane).ToArray().Average(v => (double)v);
            for (long i = 0; i < plane; i++) maxDev = Math.Max(maxDev, Math.Abs(meanImage[c * plane + i] - perChannel[c]));
        }
        m.Metadata["preprocess.mean_per_channel"] = string.Join(",", perChannel.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));
        m.Metadata["preprocess.mean_order"] = order;
        m.Metadata["preprocess.mean_kind"] = maxDev == 0 ? "per-channel" : "image";
        m.Metadata["preprocess.mean_max_deviation_from_channel_mean"] = maxDev.ToString("R", CultureInfo.InvariantCulture);
        // The keys the engine's load_resnet18 reads (native/src/models/backbones.h, ImagePreprocess::to_metadata):
        // channel order of the network input, x = (pixel(0..1) * scale - mean) / std per channel, padding mode.
        m.Metadata["padding"] = "onnx_export";
        m.Metadata["preprocess.channel_order"] = order.ToLowerInvariant();
        m.Metadata["preprocess.scale"] = "255";
        m.Metadata["preprocess.mean"] = m.Metadata["preprocess.mean_per_channel"];
        m.Metadata["preprocess.std"] = "1,1,1";
    }

    // ---------------------------------------------------------------- helpers

    private static AttributeProto? Attr(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name);
    private static long[]? Ints(NodeProto n, string name) => Attr(n, name) is { } a && a.Ints.Count > 0 ? [.. a.Ints] : null;
    private static long? Int(NodeProto n, string name) => Attr(n, name) is { } a ? a.I : null;
    private static string Join(IEnumerable<long>? v) => v is null ? "" : string.Join(",", v);
    private static string F(float v) => v.ToString("R", CultureInfo.InvariantCulture);

    private static string ShapeOf(ValueInfoProto v) =>
        string.Join(",", v.Type.TensorType.Shape.Dim.Select(d => d.DimParam is { Length: > 0 } p ? p : d.DimValue.ToString(CultureInfo.InvariantCulture)));

    private static string Sha256(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }
}
