using System.Reflection;
using System.Runtime.InteropServices;

namespace AnomalySD.Native;

/// <summary>
/// Finds the native engine library. Order: the <c>ANOMALYSD_NATIVE_PATH</c> environment variable (the library
/// file itself, or a directory holding it), then the directory of this assembly, then the application base
/// directory. If none has it, a <see cref="DllNotFoundException"/> lists every path tried.
/// </summary>
public static class NativeLibraryResolver
{
    public const string EnvironmentVariable = "ANOMALYSD_NATIVE_PATH";
    private static int _registered;

    /// <summary>File names of the library on this OS, in preference order.</summary>
    public static string[] FileNames =>
        OperatingSystem.IsWindows() ? ["anomalysd.dll"]
        : OperatingSystem.IsMacOS() ? ["libanomalysd.dylib"]
        : ["libanomalysd.so"];

    /// <summary>Registers the resolver as soon as this assembly loads.</summary>
#pragma warning disable CA2255 // a library registering its own DllImport resolver is the intended use
    [System.Runtime.CompilerServices.ModuleInitializer]
#pragma warning restore CA2255
    internal static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 1) return;
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
    }

    /// <summary>The candidate paths, in the order they are tried.</summary>
    public static IReadOnlyList<string> Candidates()
    {
        var list = new List<string>();
        string? env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(env))
        {
            if (File.Exists(env)) list.Add(Path.GetFullPath(env));
            else list.AddRange(FileNames.Select(f => Path.Combine(env, f)));
        }
        foreach (string? dir in new[] { Path.GetDirectoryName(typeof(NativeLibraryResolver).Assembly.Location), AppContext.BaseDirectory })
        {
            if (string.IsNullOrEmpty(dir)) continue;
            list.AddRange(FileNames.Select(f => Path.Combine(dir, f)));
        }
        return list.Distinct().ToList();
    }

    /// <summary>The OpenMP wait policy set for the engine when the environment does not choose one.</summary>
    public const string DefaultOmpWaitPolicy = "PASSIVE";

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetEnv(string name, string value, int overwrite);

    /// <summary>
    /// libtorch's OpenMP threads spin while they wait for work (OMP_WAIT_POLICY=ACTIVE behaviour), which is fastest on an
    /// idle machine and pathological on a shared one: two engine processes on 2 cores spun against each other and one
    /// detect took 14x longer. OpenMP reads its wait policy once, when it is loaded, and it is loaded with the engine, so
    /// the policy is set here, before the engine library loads: PASSIVE (idle threads sleep) unless OMP_WAIT_POLICY or
    /// GOMP_SPINCOUNT is already set. Measurements: README, "CPU threads".
    /// </summary>
    private static void SetOpenMpWaitPolicy()
    {
        if (OperatingSystem.IsWindows()) return; // MSVC's OpenMP runtime does not spin this way; nothing to set
        if (Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null || Environment.GetEnvironmentVariable("GOMP_SPINCOUNT") is not null) return;
        try { SetEnv("OMP_WAIT_POLICY", DefaultOmpWaitPolicy, 0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != NativeMethods.Library) return IntPtr.Zero;
        SetOpenMpWaitPolicy();
        var errors = new List<string>();
        foreach (string path in Candidates())
        {
            if (!File.Exists(path)) { errors.Add($"{path} (not found)"); continue; }
            try { return NativeLibrary.Load(path); }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
            {
                errors.Add($"{path} ({e.Message})");
            }
        }
        throw new DllNotFoundException(
            $"AnomalySD native library not found or not loadable. Build it with ./build.sh, or set {EnvironmentVariable} " +
            $"to the library or its directory. Tried: {string.Join("; ", errors)}");
    }
}
