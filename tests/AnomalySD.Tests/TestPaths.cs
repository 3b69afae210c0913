namespace AnomalySD.Tests;

/// <summary>Locates the project's <c>shared/</c> folder (golden vectors, weights, data) from tests.</summary>
public static class TestPaths
{
    /// <summary>Environment variable that overrides the location of <c>shared/</c>.</summary>
    public const string SharedDirVariable = "ANOMALYSD_SHARED_DIR";

    /// <summary>
    /// The path of <paramref name="relative"/> under <c>shared/</c>: <c>$ANOMALYSD_SHARED_DIR</c> when set,
    /// otherwise <c>../shared</c> next to the repository root (the first directory above
    /// <see cref="AppContext.BaseDirectory"/> that contains <c>AnomalySD.sln</c>).
    /// </summary>
    public static string Shared(string relative)
    {
        ArgumentNullException.ThrowIfNull(relative);
        return Path.GetFullPath(Path.Combine(SharedRoot(), relative));
    }

    /// <summary>The repository root: the first directory above the test binaries holding AnomalySD.sln.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "AnomalySD.sln")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException(
            $"No directory containing AnomalySD.sln above '{AppContext.BaseDirectory}'.");
    }

    private static string SharedRoot()
    {
        string? env = Environment.GetEnvironmentVariable(SharedDirVariable);
        if (!string.IsNullOrEmpty(env))
        {
            return env;
        }
        string root = RepositoryRoot();
        string parent = Directory.GetParent(root)?.FullName
            ?? throw new DirectoryNotFoundException($"Repository root '{root}' has no parent directory.");
        return Path.Combine(parent, "shared");
    }
}
