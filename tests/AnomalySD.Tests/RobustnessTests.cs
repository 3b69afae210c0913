using System.IO.Compression;
using System.Runtime.InteropServices;
using AnomalySD.Data;
using AnomalySD.Engine;
using AnomalySD.Native;
using AnomalySD.IO;
using AnomalySD.Training;
using AnomalySD.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace AnomalySD.Tests;

/// <summary>Bad inputs found by probing, and the native boundary's lifetimes and options (one test per defect).</summary>
[Collection(NativeCollection.Name)]
public sealed class RobustnessTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("anomalysd-robust-").FullName;

    public void Dispose()
    {
        foreach (var f in Directory.EnumerateFileSystemEntries(_dir, "*", SearchOption.AllDirectories))
            try { File.SetAttributes(f, FileAttributes.Normal); } catch (IOException) { }
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A PNG whose IHDR announces <paramref name="width"/> x <paramref name="height"/> RGB with a tiny IDAT.</summary>
    internal static byte[] HandMadePng(uint width, uint height)
    {
        var png = new MemoryStream();
        png.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        void Chunk(string type, byte[] data)
        {
            var len = BitConverter.GetBytes((uint)data.Length);
            if (BitConverter.IsLittleEndian) Array.Reverse(len);
            png.Write(len);
            var body = System.Text.Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
            png.Write(body);
            var crc = BitConverter.GetBytes(Crc32(body));
            if (BitConverter.IsLittleEndian) Array.Reverse(crc);
            png.Write(crc);
        }
        byte[] BigEndian(uint v) => [(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v];
        Chunk("IHDR", [.. BigEndian(width), .. BigEndian(height), 8, 2, 0, 0, 0]);
        var idat = new MemoryStream();
        using (var z = new ZLibStream(idat, CompressionLevel.Optimal, leaveOpen: true)) z.Write(new byte[16]);
        Chunk("IDAT", idat.ToArray());
        Chunk("IEND", []);
        return png.ToArray();
    }

    private static uint Crc32(byte[] data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }

    [Fact]
    public void AnImpossiblyTallPngIsASkipNamingTheFile()
    {
        // Before: the resize of a 1 x 20,000,000 header threw InvalidMemoryOperationException outside the decode error
        // handling and ended the whole run. Now the header is checked first: an ImageLoadException naming the file.
        foreach (var (w, h) in new[] { (1u, 20_000_000u), (100_000u, 100_000u) })
        {
            string path = Path.Combine(_dir, $"tall_{w}x{h}.png");
            File.WriteAllBytes(path, HandMadePng(w, h));
            var e = Assert.Throws<ImageLoadException>(() => ImageIO.LoadRgb(path, 64));
            Assert.Contains(path, e.Message);
            Assert.Contains("beyond the limits", e.Message);
            Assert.Throws<ImageLoadException>(() => ImageIO.Identify(path));
        }
    }

    [Fact]
    public void ExifOrientationAppliesToTheImageItsSizeAndItsMask()
    {
        // Stored 96 x 64 with orientation 6 (rotate 90° clockwise): displayed 64 x 96. Stored pixel (x, y) shows at
        // (63 - y, x). A red 8 x 8 patch stored at x 10..17, y 4..11 shows at columns 52..59, rows 10..17; its mask is
        // drawn on the displayed image (as MVTec/VisA masks are) and must be accepted and line up.
        string jpeg = Path.Combine(_dir, "rotated.jpg");
        using (var img = new Image<Rgb24>(96, 64, new Rgb24(20, 20, 20)))
        {
            for (int y = 4; y < 12; y++) for (int x = 10; x < 18; x++) img[x, y] = new Rgb24(250, 0, 0);
            img.Metadata.ExifProfile = new ExifProfile();
            img.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
            img.SaveAsJpeg(jpeg);
        }
        string maskPath = Path.Combine(_dir, "rotated_mask.png");
        using (var m = new Image<L8>(64, 96))
        {
            for (int y = 10; y < 18; y++) for (int x = 52; x < 60; x++) m[x, y] = new L8(255);
            m.SaveAsPng(maskPath);
        }
        var (w, h) = ImageIO.Identify(jpeg);
        Assert.Equal((64, 96), (w, h));
        var mask = ImageIO.LoadMask(maskPath, 0, w, h);
        var image = ImageIO.LoadRgb(jpeg, 0);
        Assert.Equal((64, 96), (image.Width, image.Height));
        Assert.True(image[0, 13, 55] > 0.8f && image[0, 13, 20] < 0.3f, "the red patch is where the displayed image has it");
        Assert.Equal(1, mask[13, 55]);
        // A mask of the stored size is refused, naming both sizes.
        string stored = Path.Combine(_dir, "stored_mask.png");
        using (var m = new Image<L8>(96, 64)) m.SaveAsPng(stored);
        var e = Assert.Throws<ImageLoadException>(() => ImageIO.LoadMask(stored, 0, w, h));
        Assert.Contains("mask is 96x64 but its image is 64x96", e.Message);
    }

    [Fact]
    public void ZeroOneMasksAreAnomalousWhereNonZero()
    {
        // VisA stores masks as 0/1: before, the > 127 threshold read them as all-normal.
        string WriteMask(string name, params (int X, int Y, byte V)[] pixels)
        {
            string path = Path.Combine(_dir, name);
            using var m = new Image<L8>(16, 16);
            foreach (var (x, y, v) in pixels) m[x, y] = new L8(v);
            m.SaveAsPng(path);
            return path;
        }
        var mask = ImageIO.LoadMask(WriteMask("visa_mask.png", (3, 4, 1), (10, 10, 1)), 0);
        Assert.Equal(2, mask.Count);
        Assert.Equal(1, mask[4, 3]);
        // A 0/255 mask keeps its > 127 reading: the faint edge values that JPEG or antialiasing leave stay normal.
        var strict = ImageIO.LoadMask(WriteMask("mvtec_mask.png", (3, 4, 3), (10, 10, 255), (11, 10, 128)), 0);
        Assert.Equal(2, strict.Count);
        Assert.Equal(0, strict[4, 3]);
    }

    [Fact]
    public void OutputFoldersAreCheckedFirstAndLocked()
    {
        string outDir = Path.Combine(_dir, "out");
        using (var first = OutputFolder.Open(outDir, OutputKind.Report))
        {
            // A second writer (another process, or another command in this one) is refused while the first holds it.
            var e = Assert.Throws<IOException>(() => OutputFolder.Open(outDir, OutputKind.Report));
            Assert.Contains("in use by another anomalysd process", e.Message);
            // The refused writer must not remove the holder's lock file on its way out: a third is refused too.
            Assert.True(File.Exists(Path.Combine(outDir, OutputFolder.LockFileName)));
            Assert.Contains("in use by another anomalysd process", Assert.Throws<IOException>(() => OutputFolder.Open(outDir, OutputKind.Report)).Message);
            AtomicFile.WriteText(first.File("a/b.txt"), "complete");
            first.Complete();
        }
        using (OutputFolder.Open(outDir, OutputKind.Report)) { } // released with the first
        Assert.Equal("complete", File.ReadAllText(Path.Combine(outDir, "a", "b.txt")));
        Assert.False(File.Exists(Path.Combine(outDir, OutputFolder.LockFileName)));
        // A failing write leaves the previous content and no temporary file.
        string target = Path.Combine(outDir, "r.txt");
        File.WriteAllText(target, "previous");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(target, s => { s.WriteByte(1); throw new InvalidOperationException("disk full"); }));
        Assert.Equal("previous", File.ReadAllText(target));
        Assert.Equal(["a", "r.txt"], OutputFolder.VisibleEntries(outDir));
        Assert.Equal([OutputFolder.MarkerFileName, "r.txt"], Directory.GetFiles(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        // A path under a file cannot be an output folder: refused before any work.
        Assert.Throws<IOException>(() => OutputFolder.Open(Path.Combine(target, "sub"), OutputKind.Report));
    }

    [Fact]
    public void DetectOutputNamesKeepTheInputPathAndNeverCollide()
    {
        // detect --out o dirA dirB, both holding 0.png and 1.png, plus dirA/0.png again: before, later heatmaps silently
        // replaced earlier ones (6 files for 12 images).
        foreach (string d in new[] { "dirA", "dirB", Path.Combine("x", "dirA") })
        {
            Directory.CreateDirectory(Path.Combine(_dir, d));
            foreach (string f in new[] { "0.png", "1.png" }) File.WriteAllBytes(Path.Combine(_dir, d, f), [0]);
        }
        var names = InputFiles.Expand([Path.Combine(_dir, "dirA"), Path.Combine(_dir, "dirB"), Path.Combine(_dir, "x", "dirA"), Path.Combine(_dir, "dirA", "0.png")])
            .Select(t => t.Name).ToList();
        Assert.Equal(["dirA/0", "dirA/1", "dirB/0", "dirB/1", "dirA/0_2", "dirA/1_2", "0"], names.Select(n => n.Replace('\\', '/')).ToList());
    }

    [Fact]
    public void ATrainerKeepsItsModelAlive()
    {
        // Before: asd_model_free deleted the model under a live trainer (use-after-free). Now the trainer holds a reference.
        long before = EngineInfo.NativeLiveObjects();
        var model = InpaintingModel.CreateCompact(5);
        var trainer = ModelTrainer.Create(model, TrainerKind.Unet, new TrainerOptions(BatchSize: 2));
        model.Dispose();
        var tok = new HashPromptTokenizer();
        var shot = new RgbImage(32, 32, Enumerable.Range(0, 3 * 32 * 32).Select(i => (i % 7) / 7f).ToArray());
        trainer.AddCategory("toy", [shot], null, tok.EncodePadded(["A perfect toy."]), tok.MaxLength);
        Assert.True(trainer.Run(1) > 0);
        Assert.Equal(1, trainer.Steps);
        trainer.Dispose();
        Assert.Equal(before, EngineInfo.NativeLiveObjects());
    }

    [Fact]
    public void TypedOptionsNameTheFieldThatIsOutOfRange()
    {
        using var model = InpaintingModel.CreateCompact(6);
        var e = Assert.Throws<AsdInvalidArgumentException>(() => ModelTrainer.Create(model, TrainerKind.Unet, new TrainerOptions(BatchSize: 0)));
        Assert.Contains("batch_size", e.Message);
        e = Assert.Throws<AsdInvalidArgumentException>(() => ModelTrainer.Create(model, TrainerKind.Unet, new TrainerOptions(IouThresholds: [0.2, 1.5])));
        Assert.Contains("iou_thresholds", e.Message);
        e = Assert.Throws<AsdInvalidArgumentException>(() => model.ConfigureScoring(new ScoringOptions(ScoringOptions.DefaultResNet18Path()!, FeatureAggregation: 2)));
        Assert.Contains("feature_aggregation", e.Message);
        e = Assert.Throws<AsdInvalidArgumentException>(() => model.ConfigureScoring(new ScoringOptions(ScoringOptions.DefaultResNet18Path()!, Rotations: [45])));
        Assert.Contains("rotation 45", e.Message);
    }

    [Fact]
    public void DeviceStringsAreParsedInOnePlace()
    {
        // Before: "cuda:x" failed with the message "stoll".
        foreach (string bad in new[] { "cuda:x", "gpu", "cuda:", "cuda:1:2" })
        {
            var e = Assert.ThrowsAny<AsdException>(() => InpaintingModel.CreateCompact(0, bad));
            Assert.Contains($"unknown device '{bad}'", e.Message);
            Assert.ThrowsAny<AsdException>(() => EngineInfo.ResetPeakMemory(bad));
        }
    }

    [Fact]
    public void TheErrorMapIsSearchedOnceAndItsSizeQueryComputesNothing()
    {
        using var model = InpaintingModel.CreateCompact(7);
        Fitting.ConfigureScoring(model, new ScoringBackbones());
        var image = ImageIO.LoadRgb(TestPaths.Shared("data/bottle/train/good/000.png"), 96);
        model.AddPrototypes("bottle", [image]);
        var map = model.ErrorMap("bottle", image);
        Assert.Equal((12, 12), (map.Height, map.Width)); // ceil(96 / 8)
        // The size query takes no image at all (it cannot run eq. 14): see InpaintingModel.ErrorMap.
        Assert.Equal(AsdStatus.Ok, ErrorMapQuery(model, 100, 60, out long h, out long w));
        Assert.Equal((13L, 8L), (h, w));
        // A failing call leaves the out-parameters alone.
        Assert.Equal(AsdStatus.NotFound, ErrorMapQuery(model, 100, 60, out h, out w, "pcb"));
        Assert.Equal((-5L, -5L), (h, w));
    }

    [DllImport("libc", EntryPoint = "getenv")]
    private static extern IntPtr GetEnv(string name);

    [Fact]
    public void OpenMpThreadsSleepWhenIdleUnlessTheUserChoseOtherwise()
    {
        // The engine is loaded by now (other tests, or this call): its OpenMP runtime was given OMP_WAIT_POLICY=PASSIVE
        // unless the environment already set a policy (then it is left alone).
        _ = EngineInfo.Query();
        string? policy = Marshal.PtrToStringUTF8(GetEnv("OMP_WAIT_POLICY"));
        string? inherited = Environment.GetEnvironmentVariable("OMP_WAIT_POLICY");
        if (inherited is null && Environment.GetEnvironmentVariable("GOMP_SPINCOUNT") is null)
            Assert.Equal(NativeLibraryResolver.DefaultOmpWaitPolicy, policy);
        else
            Assert.Equal(inherited, policy);
    }

    /// <summary>asd_model_error_map called through its raw export (no marshalling stub that would zero the out-parameters).</summary>
    private static unsafe AsdStatus ErrorMapQuery(InpaintingModel model, long height, long width, out long h, out long w, string category = "bottle")
    {
        var handle = (ModelHandle)typeof(InpaintingModel).GetProperty("Handle", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(model)!;
        var library = NativeLibrary.Load(NativeLibraryResolver.Candidates().First(File.Exists));
        var fn = (delegate* unmanaged<IntPtr, byte*, float*, long, long, AsdErrorMapOptions*, float*, long, long*, long*, AsdStatus>)NativeLibrary.GetExport(library, "asd_model_error_map");
        long hh = -5, ww = -5;
        byte[] name = System.Text.Encoding.UTF8.GetBytes(category + "\0");
        AsdStatus status;
        fixed (byte* pn = name) status = fn(handle.DangerousGetHandle(), pn, null, height, width, null, null, 0, &hh, &ww);
        (h, w) = (hh, ww);
        return status;
    }
}
