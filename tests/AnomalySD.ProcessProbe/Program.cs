using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Checkpoints;
using AnomalySD.Detection;
using AnomalySD.IO;
using Microsoft.Extensions.Logging.Abstractions;

// Test support for the checkpoint concurrency tests (tests/AnomalySD.Tests/CheckpointConcurrencyTests.cs): real processes that
// write and read one checkpoint folder at the same time, with the library code that fit (CheckpointStore.Publish) and detect /
// eval (CheckpointStore.OpenForRead + Checkpoints.Load) use.
//
//   publish <checkpoint> <sourceA> <sourceB> <count>   loads models A and B, then publishes A, B, A, ... count times into
//                                                      <checkpoint>; one line per publish: "publish <i> <start> <end> <A|B>"
//   read <checkpoint> <probe.png> <stop-file>          loads the checkpoint again and again until <stop-file> exists; one
//                                                      line per load: "read <start> <end> <signature> <version>"
//   signature <checkpoint> <probe.png>                 one line: "signature <signature>"
//
// Times are UTC ticks. A signature hashes what a load gives: the metadata, the prototype error-map score of the probe image
// (the banks and the backbone) and a 2-step inpainting of it under one mask (UNet, VAE, text condition): bit-equal for the
// same checkpoint on one machine, so a model mixed from two checkpoints has neither signature.
string Stamp() => DateTime.UtcNow.Ticks.ToString(CultureInfo.InvariantCulture);
var log = NullLogger.Instance;
switch (args.FirstOrDefault())
{
    case "publish":
    {
        var (a, metaA) = CheckpointLoader.Load(args[2], "cpu", new ScoringBackbones(), log);
        var (b, metaB) = CheckpointLoader.Load(args[3], "cpu", new ScoringBackbones(), log);
        int count = int.Parse(args[4], CultureInfo.InvariantCulture);
        using var folder = OutputFolder.Open(args[1], OutputKind.Checkpoint);
        for (int i = 0; i < count; i++)
        {
            var (model, meta, name) = i % 2 == 0 ? (a, metaA, "A") : (b, metaB, "B");
            string start = Stamp();
            CheckpointStore.Publish(folder, dir => model.Save(dir, meta.ToJson()), log);
            Console.WriteLine($"publish {i} {start} {Stamp()} {name}");
        }
        folder.Complete();
        return 0;
    }
    case "read":
        while (!File.Exists(args[3]))
        {
            string start = Stamp();
            var (signature, version) = Signature(args[1], args[2]);
            Console.WriteLine($"read {start} {Stamp()} {signature} {version}");
        }
        return 0;
    case "signature":
        Console.WriteLine($"signature {Signature(args[1], args[2]).Signature}");
        return 0;
    default:
        Console.Error.WriteLine("usage: publish <checkpoint> <sourceA> <sourceB> <count> | read <checkpoint> <probe.png> <stop-file> | signature <checkpoint> <probe.png>");
        return 1;
}

(string Signature, string Version) Signature(string checkpoint, string probe)
{
    // What detect and serve do: one Detector over the checkpoint's current version.
    using var detector = Detector.Open(checkpoint, new DetectorSettings(["cpu"], new ScoringBackbones(), new ScoringRequest(MaskStrategy.Prototype)), log);
    var meta = detector.Metadata;
    string category = meta.Categories[0].Category;
    var image = detector.Decode(probe);
    double e = detector.Detect(category, [image])[0].RawScore;
    var small = ImageIO.Resize(image, meta.ImageSize, meta.ImageSize);
    var mask = new BinaryMask(meta.ImageSize, meta.ImageSize, Enumerable.Range(0, meta.ImageSize * meta.ImageSize)
        .Select(i => (byte)(i % meta.ImageSize >= meta.ImageSize / 4 && i / meta.ImageSize < meta.ImageSize / 2 ? 1 : 0)).ToArray());
    var inpainted = detector.Engine(0).Inpaint(category, small, [mask], new InpaintOptions(NumInferenceSteps: 2, NoiseStrength: 1.0, Seed: 7))[0];
    var bytes = new List<byte>(Encoding.UTF8.GetBytes(meta.ToJson().ToJsonString()));
    bytes.AddRange(BitConverter.GetBytes(e));
    foreach (float v in inpainted.Data) bytes.AddRange(BitConverter.GetBytes(v));
    return (Convert.ToHexString(SHA256.HashData(bytes.ToArray()))[..16], detector.Version ?? "-");
}
