using System.Runtime.InteropServices;

namespace AnomalySD.Native;

/// <summary>
/// Base of every SafeHandle over a native engine object. Handles are created only from a pointer that a
/// successful <c>asd_*_create</c>/<c>load</c> returned (<see cref="AsdHandle.Wrap{T}"/>), and freed exactly once by
/// the matching <c>asd_*_free</c>. <see cref="LiveCount"/> counts handles created and not yet released, so a test
/// can assert that a workload leaves none behind (native objects are counted too: <c>asd_live_objects</c>).
/// </summary>
internal abstract class AsdHandle : SafeHandle
{
    private static long _live;
    private static long _peak;

    /// <summary>Managed handles alive now (created, not released).</summary>
    public static long LiveCount => Interlocked.Read(ref _live);

    /// <summary>Largest <see cref="LiveCount"/> seen in this process.</summary>
    public static long PeakCount => Interlocked.Read(ref _peak);

    protected AsdHandle() : base(IntPtr.Zero, ownsHandle: true) { }

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Wraps a pointer returned by a successful native call (must not be null).</summary>
    public static T Wrap<T>(IntPtr pointer) where T : AsdHandle, new()
    {
        if (pointer == IntPtr.Zero) throw new AsdException(AsdStatus.Internal, $"native call returned a null {typeof(T).Name}");
        var h = new T();
        h.SetHandle(pointer);
        long now = Interlocked.Increment(ref _live);
        long peak;
        while (now > (peak = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, now, peak) != peak) { }
        return h;
    }

    protected sealed override bool ReleaseHandle()
    {
        Interlocked.Decrement(ref _live);
        return Free(handle) == AsdStatus.Ok;
    }

    /// <summary>Calls the native <c>asd_*_free</c> of this type.</summary>
    protected abstract AsdStatus Free(IntPtr pointer);
}

/// <summary>Handle of an <c>asd_tensor_map</c> (an ordered name -> tensor map, e.g. a safetensors file).</summary>
internal sealed class TensorMapHandle : AsdHandle
{
    protected override AsdStatus Free(IntPtr pointer) => NativeMethods.asd_tensor_map_free(pointer);
}

/// <summary>Handle of an <c>asd_model</c> (SD inpainting model + categories).</summary>
internal sealed class ModelHandle : AsdHandle
{
    protected override AsdStatus Free(IntPtr pointer) => NativeMethods.asd_model_free(pointer);
}

/// <summary>Handle of an <c>asd_trainer</c> (fine-tuning of a model). The native trainer holds a reference to its model, so
/// the model's handle may be disposed first.</summary>
internal sealed class TrainerHandle : AsdHandle
{
    protected override AsdStatus Free(IntPtr pointer) => NativeMethods.asd_trainer_free(pointer);
}
