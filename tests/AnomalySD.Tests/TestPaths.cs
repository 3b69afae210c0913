namespace AnomalySD.Tests;

/// <summary>Locates the read-only <c>shared/</c> folder (golden vectors, data, weights) that sits beside the repository.</summary>
public static class TestPaths
{
    /// <summary>The repository root: the first folder above the test binaries holding AnomalySD.sln.</summary>
    public static string RepositoryRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "AnomalySD.sln"))) return dir.FullName;
            throw new DirectoryNotFoundException($"no AnomalySD.sln above {AppContext.BaseDirectory}");
        }
    }

    /// <summary><c>../shared/&lt;relative&gt;</c> of the repository, or under ANOMALYSD_SHARED_DIR when set.</summary>
    public static string Shared(string relative)
    {
        string? env = Environment.GetEnvironmentVariable("ANOMALYSD_SHARED_DIR");
        string root = !string.IsNullOrEmpty(env) ? env : Path.Combine(Path.GetDirectoryName(RepositoryRoot)!, "shared");
        return Path.GetFullPath(Path.Combine(root, relative));
    }
}
