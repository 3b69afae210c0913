using AnomalySD.Cli;
using AnomalySD.Engine;
using Xunit;

namespace AnomalySD.Tests;

[Collection(NativeCollection.Name)]
public sealed class CliTests
{
    [Fact]
    public void InfoPrintsLibtorchVersionAndThreads()
    {
        var output = new StringWriter();
        Assert.Equal(0, InfoCommand.Run(new InfoVerb(), output));
        string text = output.ToString();
        var info = EngineInfo.Query();
        Assert.Contains($"libtorch           {info.TorchVersion}", text);
        Assert.Contains($"CPU threads        {info.NumThreads}", text);
        Assert.Contains("devices            cpu", text);
    }
}
