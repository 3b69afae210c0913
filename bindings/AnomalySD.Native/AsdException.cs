namespace AnomalySD.Native;

/// <summary>
/// A failure reported by the native engine. <see cref="Status"/> is the native status code; the message is the
/// engine's thread-local message (<c>asd_last_error</c>), which names the function, the file and the problem.
/// Subclasses exist per status so callers can catch what they can handle.
/// </summary>
public class AsdException : Exception
{
    public AsdStatus Status { get; }

    public AsdException(AsdStatus status, string message) : base(message) => Status = status;

    /// <summary>Throws the typed exception for <paramref name="status"/> unless it is <see cref="AsdStatus.Ok"/>.
    /// Must be called on the thread that made the native call (the message is thread-local).</summary>
    public static unsafe void Check(AsdStatus status)
    {
        if (status == AsdStatus.Ok) return;
        string message = NativeMethods.FromUtf8(NativeMethods.asd_last_error());
        if (message.Length == 0) message = $"native call failed with status {status}";
        throw status switch
        {
            AsdStatus.InvalidArgument => new AsdInvalidArgumentException(message),
            AsdStatus.IO => new AsdIOException(message),
            AsdStatus.Format => new AsdFormatException(message),
            AsdStatus.NotFound => new AsdNotFoundException(message),
            AsdStatus.Unsupported => new AsdUnsupportedException(message),
            AsdStatus.OutOfMemory => new AsdOutOfMemoryException(message),
            AsdStatus.Runtime => new AsdException(status, message),
            _ => new AsdException(status, message),
        };
    }
}

/// <summary>A NULL pointer, an out-of-range value or a wrong shape was passed to the engine.</summary>
public sealed class AsdInvalidArgumentException(string message) : AsdException(AsdStatus.InvalidArgument, message);

/// <summary>A file could not be opened, read, written or renamed.</summary>
public sealed class AsdIOException(string message) : AsdException(AsdStatus.IO, message);

/// <summary>A file exists but is malformed (corrupt, truncated, hostile).</summary>
public sealed class AsdFormatException(string message) : AsdException(AsdStatus.Format, message);

/// <summary>A named key, tensor, category or device does not exist.</summary>
public sealed class AsdNotFoundException(string message) : AsdException(AsdStatus.NotFound, message);

/// <summary>A valid request this build cannot do (CUDA on a CPU build, an unsupported config value).</summary>
public sealed class AsdUnsupportedException(string message) : AsdException(AsdStatus.Unsupported, message);

/// <summary>The engine ran out of host or device memory.</summary>
public sealed class AsdOutOfMemoryException(string message) : AsdException(AsdStatus.OutOfMemory, message);
