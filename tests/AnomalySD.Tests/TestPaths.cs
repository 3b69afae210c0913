namespace AnomalySD.Tests;

/// <summary>Locates the project's shared folder (golden vectors, weights) from the test binaries.</summary>
public static class TestPaths
{
    /// <summary>
    /// <c>&lt;dir containing AnomalySD.sln&gt;/../shared/&lt;relative&gt;</c>, found by walking up from
    /// <see cref="AppContext.BaseDirectory"/>; the environment variable ANOMALYSD_SHARED_DIR, when set,
    /// replaces the shared folder.
    /// </summary>
    public static string Shared(string relative)
    {
        string? overrideDir = Environment.GetEnvironmentVariable("ANOMALYSD_SHARED_DIR");
        if (!string.IsNullOrEmpty(overrideDir))
            return Path.GetFullPath(Path.Combine(overrideDir, relative));
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "AnomalySD.sln")))
                return Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", relative));
        }
        throw new DirectoryNotFoundException(
            $"No AnomalySD.sln above {AppContext.BaseDirectory}; set ANOMALYSD_SHARED_DIR to the shared folder.");
    }
}
