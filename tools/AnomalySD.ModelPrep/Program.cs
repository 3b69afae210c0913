using AnomalySD.ModelPrep;
using Onnx;

// AnomalySD.ModelPrep: offline conversion of pretrained parts to engine safetensors.
//   AnomalySD.ModelPrep resnet18 [--out <path>] [--onnx <ResNet18.onnx>] [--preprocess <ResNetPreprocess.onnx>] [--dry-run]
//   AnomalySD.ModelPrep dump <file.onnx>        (node list: op types, inputs with initializer shapes, attributes)
const string Usage =
    "usage: AnomalySD.ModelPrep resnet18 [--out <path>] [--onnx <ResNet18.onnx>] [--preprocess <ResNetPreprocess.onnx>] [--dry-run]\n" +
    "       AnomalySD.ModelPrep dump <file.onnx>";

try
{
    if (args.Length == 0 || args[0] is "-h" or "--help") { Console.WriteLine(Usage); return args.Length == 0 ? 1 : 0; }
    switch (args[0])
    {
        case "resnet18":
        {
            string? outPath = null, onnx = null, prep = null;
            bool dryRun = false;
            for (int i = 1; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--out": outPath = Next(); break;
                    case "--onnx": onnx = Next(); break;
                    case "--preprocess": prep = Next(); break;
                    case "--dry-run": dryRun = true; break;
                    default: throw new ArgumentException($"unknown option '{args[i]}'\n{Usage}");
                }
            }
            onnx ??= ResNet18Converter.DefaultModelPath();
            prep ??= ResNet18Converter.DefaultPreprocessPath();
            if (dryRun)
            {
                var r = ResNet18Converter.Read(onnx, prep);
                foreach (var t in r.Tensors) Console.WriteLine($"{t.Name} [{string.Join(",", t.Shape)}]");
                foreach (var (k, v) in r.Metadata) Console.WriteLine($"{k} = {v}");
                return 0;
            }
            outPath ??= ResNet18Converter.DefaultOutputPath();
            var m = ResNet18Converter.ConvertToFile(onnx, prep, outPath);
            Console.WriteLine($"wrote {outPath}: {m.Tensors.Count} tensors, blocks {m.Metadata["blocks"]}, bn.eps {m.Metadata["bn.eps"]}, " +
                              $"input {m.Metadata["input.channel_order"]} 0-255 minus mean ({m.Metadata["preprocess.mean_per_channel"]})");
            foreach (string note in m.Notes) Console.WriteLine("note: " + note);
            return 0;
        }
        case "dump" when args.Length == 2:
        {
            ModelProto model = ResNet18Converter.Load(args[1]);
            GraphDump.Write(model, Console.Out);
            return 0;
        }
        default:
            Console.Error.WriteLine(Usage);
            return 2;
    }
}
catch (Exception e) when (e is ModelPrepException or ArgumentException or AnomalySD.Native.AsdException or IOException or DllNotFoundException)
{
    Console.Error.WriteLine($"AnomalySD.ModelPrep: {e.Message}");
    return 1;
}
