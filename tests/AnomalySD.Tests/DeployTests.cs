using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit;
using YamlDotNet.RepresentationModel;

namespace AnomalySD.Tests;

/// <summary>
/// The deploy/ manifests, checked without a cluster: the Kubernetes Jobs against the batch/v1 Job fields they rely on, the
/// Slurm scripts with bash -n. (kubectl apply --dry-run=client needs a reachable API server, which the build machine lacks.)
/// </summary>
public sealed class DeployTests
{
    private static string Deploy(string rel) => Path.Combine(TestPaths.RepositoryRoot, "deploy", rel);

    private static YamlMappingNode Load(string rel)
    {
        var stream = new YamlStream();
        using var reader = new StreamReader(Deploy(rel));
        stream.Load(reader);
        Assert.Single(stream.Documents);
        return Assert.IsType<YamlMappingNode>(stream.Documents[0].RootNode);
    }

    private static YamlNode At(YamlMappingNode node, params string[] path)
    {
        YamlNode current = node;
        foreach (string key in path)
        {
            var map = Assert.IsType<YamlMappingNode>(current);
            Assert.True(map.Children.TryGetValue(new YamlScalarNode(key), out var next), $"missing {string.Join(".", path)}");
            current = next!;
        }
        return current;
    }

    private static string Scalar(YamlMappingNode node, params string[] path) => Assert.IsType<YamlScalarNode>(At(node, path)).Value!;

    /// <summary>The Job schema's basic shape: apiVersion/kind, metadata.name a DNS label, a pod template with containers.</summary>
    private static (YamlMappingNode Pod, YamlMappingNode Container) CheckJob(YamlMappingNode job)
    {
        Assert.Equal("batch/v1", Scalar(job, "apiVersion"));
        Assert.Equal("Job", Scalar(job, "kind"));
        Assert.Matches(new Regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"), Scalar(job, "metadata", "name"));
        var pod = Assert.IsType<YamlMappingNode>(At(job, "spec", "template", "spec"));
        Assert.Contains(Scalar(pod, "restartPolicy"), new[] { "Never", "OnFailure" });
        var containers = Assert.IsType<YamlSequenceNode>(At(pod, "containers"));
        var container = Assert.IsType<YamlMappingNode>(Assert.Single(containers.Children));
        Assert.False(string.IsNullOrWhiteSpace(Scalar(container, "image")));
        // Every volume mount is backed by a volume of the pod.
        var volumes = ((YamlSequenceNode)At(pod, "volumes")).Children.Cast<YamlMappingNode>().Select(v => Scalar(v, "name")).ToHashSet();
        foreach (var mount in ((YamlSequenceNode)At(container, "volumeMounts")).Children.Cast<YamlMappingNode>())
            Assert.Contains(Scalar(mount, "name"), volumes);
        return (pod, container);
    }

    [Fact]
    public void TheIndexedJobRunsOneShardPerPodOnOneGpu()
    {
        var job = Load("kubernetes/eval-shards.yaml");
        var (pod, container) = CheckJob(job);
        Assert.Equal("Indexed", Scalar(job, "spec", "completionMode"));
        int completions = int.Parse(Scalar(job, "spec", "completions")), parallelism = int.Parse(Scalar(job, "spec", "parallelism"));
        Assert.InRange(parallelism, 1, completions);
        Assert.True(int.Parse(Scalar(job, "spec", "backoffLimitPerIndex")) >= 0);
        Assert.Equal("Never", Scalar(pod, "restartPolicy")); // backoffLimitPerIndex requires it
        string args = string.Join(" ", ((YamlSequenceNode)At(container, "args")).Children.Select(n => ((YamlScalarNode)n).Value));
        Assert.Contains("anomalysd eval", args);
        Assert.Contains($"--shard-count {completions}", args);
        Assert.Contains("--checkpoint", args);
        Assert.Contains("$JOB_COMPLETION_INDEX", args); // one output folder per shard
        Assert.Equal("1", Scalar(container, "resources", "requests", "nvidia.com/gpu"));
        Assert.Equal("1", Scalar(container, "resources", "limits", "nvidia.com/gpu"));
    }

    [Fact]
    public void TheServeDeploymentProbesTheServersHealthPathsAndDrainsOnSigterm()
    {
        var stream = new YamlStream();
        using (var reader = new StreamReader(Deploy("kubernetes/serve.yaml"))) stream.Load(reader);
        var docs = stream.Documents.Select(d => Assert.IsType<YamlMappingNode>(d.RootNode)).ToList();
        var deployment = Assert.Single(docs, d => Scalar(d, "kind") == "Deployment");
        var service = Assert.Single(docs, d => Scalar(d, "kind") == "Service");
        Assert.Equal("apps/v1", Scalar(deployment, "apiVersion"));
        var pod = Assert.IsType<YamlMappingNode>(At(deployment, "spec", "template", "spec"));
        var container = Assert.IsType<YamlMappingNode>(Assert.Single(((YamlSequenceNode)At(pod, "containers")).Children));
        var args = ((YamlSequenceNode)At(container, "args")).Children.Select(n => ((YamlScalarNode)n).Value!).ToList();
        Assert.Equal("serve", args[0]);
        Assert.Contains("--host=0.0.0.0", args);
        int port = int.Parse(args.Single(a => a.StartsWith("--port=")).Split('=')[1]);
        Assert.Equal(port, int.Parse(Scalar((YamlMappingNode)((YamlSequenceNode)At(container, "ports")).Children[0], "containerPort")));
        // The probes are the paths the server answers (ServeTests), on the named port.
        Assert.Equal("/v2/health/ready", Scalar(container, "readinessProbe", "httpGet", "path"));
        Assert.Equal("/v2/health/live", Scalar(container, "livenessProbe", "httpGet", "path"));
        // The pod outlives the server's drain.
        double grace = double.Parse(args.Single(a => a.StartsWith("--shutdown-grace-s=")).Split('=')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(int.Parse(Scalar(pod, "terminationGracePeriodSeconds")) > grace);
        // The Service selects the Deployment's pods.
        var selector = (YamlMappingNode)At(service, "spec", "selector");
        var labels = (YamlMappingNode)At(deployment, "spec", "template", "metadata", "labels");
        foreach (var (k, v) in selector.Children) Assert.Equal(((YamlScalarNode)v).Value, ((YamlScalarNode)labels.Children[k]).Value);
    }

    [Fact]
    public void TheMergeJobNeedsNoGpu()
    {
        var job = Load("kubernetes/merge-job.yaml");
        var (_, container) = CheckJob(job);
        string args = string.Join(" ", ((YamlSequenceNode)At(container, "args")).Children.Select(n => ((YamlScalarNode)n).Value));
        Assert.Contains("anomalysd merge", args);
        var requests = (YamlMappingNode)At(container, "resources", "requests");
        Assert.False(requests.Children.ContainsKey(new YamlScalarNode("nvidia.com/gpu")));
    }

    [Fact]
    public void TheSlurmScriptsParseAndAskForOneGpuPerTask()
    {
        foreach (string script in new[] { "slurm/eval-shards.sbatch", "slurm/merge.sbatch", "slurm/submit.sh" })
        {
            using var bash = Process.Start(new ProcessStartInfo("bash", ["-n", Deploy(script)]) { RedirectStandardError = true })!;
            string errors = bash.StandardError.ReadToEnd();
            bash.WaitForExit();
            Assert.True(bash.ExitCode == 0, $"{script}: {errors}");
        }
        string shards = File.ReadAllText(Deploy("slurm/eval-shards.sbatch"));
        Assert.Matches(new Regex(@"^#SBATCH --array=0-\d+", RegexOptions.Multiline), shards);
        Assert.Matches(new Regex(@"^#SBATCH --gres=gpu:1\b", RegexOptions.Multiline), shards);
        Assert.Contains("--checkpoint", shards);
        Assert.Contains("afterok", File.ReadAllText(Deploy("slurm/submit.sh")));
    }
}
