using System.Diagnostics;
using System.Text;

namespace AnomalySD.Tests;

/// <summary>Runs the built CLI (anomalysd.dll) or the test probe (AnomalySD.ProcessProbe.dll) as a real process.</summary>
public sealed class ProcessRunner : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new(), _stderr = new();

    public static string Cli => Path.Combine(AppContext.BaseDirectory, "anomalysd.dll");
    public static string Probe => Path.Combine(AppContext.BaseDirectory, "AnomalySD.ProcessProbe.dll");

    /// <summary>Starts <c>dotnet <paramref name="dll"/> <paramref name="args"/></c> with one engine thread (two processes share the cores).</summary>
    public ProcessRunner(string dll, IEnumerable<string> args, string? workingDirectory = null)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(dll);
        foreach (string a in args) start.ArgumentList.Add(a);
        if (workingDirectory is not null) start.WorkingDirectory = workingDirectory;
        start.Environment["ANOMALYSD_NUM_THREADS"] = "1";
        // The engine the tests run against: the one named by ANOMALYSD_NATIVE_PATH (tools/matrix.sh: libtorch 2.6), else the
        // copy beside the tests.
        start.Environment["ANOMALYSD_NATIVE_PATH"] = Environment.GetEnvironmentVariable("ANOMALYSD_NATIVE_PATH") is { Length: > 0 } engine
            ? engine : AppContext.BaseDirectory;
        _process = new Process { StartInfo = start };
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_stdout) _stdout.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public bool HasExited => _process.HasExited;

    public int Pid => _process.Id;

    public string Stdout { get { lock (_stdout) return _stdout.ToString(); } }
    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    /// <summary>Waits for the exit (killing the process after <paramref name="timeoutSeconds"/>) and returns its code.</summary>
    public int Wait(int timeoutSeconds = 600)
    {
        if (!_process.WaitForExit(timeoutSeconds * 1000))
        {
            _process.Kill(entireProcessTree: true);
            throw new TimeoutException($"process did not finish in {timeoutSeconds} s; stderr: {Stderr}");
        }
        _process.WaitForExit(); // drains the output
        return _process.ExitCode;
    }

    /// <summary>Waits until stderr or stdout contains <paramref name="text"/>; false if the process exits or time runs out first.</summary>
    public bool WaitFor(string text, int timeoutSeconds = 300)
    {
        var deadline = DateTime.UtcNow.AddSeconds(timeoutSeconds);
        while (DateTime.UtcNow < deadline)
        {
            if (Stderr.Contains(text) || Stdout.Contains(text)) return true;
            if (_process.HasExited) return Stderr.Contains(text) || Stdout.Contains(text);
            Thread.Sleep(20);
        }
        return false;
    }

    public void Kill() => _process.Kill(entireProcessTree: true);

    /// <summary>Runs the CLI to completion: (exit code, stdout, stderr).</summary>
    public static (int Rc, string Stdout, string Stderr) RunCli(params string[] args)
    {
        using var p = new ProcessRunner(Cli, args);
        int rc = p.Wait();
        return (rc, p.Stdout, p.Stderr);
    }

    public void Dispose()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.Dispose();
    }
}
