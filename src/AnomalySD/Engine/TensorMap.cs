using AnomalySD.Native;

namespace AnomalySD.Engine;

/// <summary>Shape and element type of one tensor of a <see cref="TensorMap"/>.</summary>
public sealed record TensorInfo(string Name, TensorDtype Dtype, long[] Shape)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// An ordered name -> tensor map held by the engine: the content of a safetensors file, or tensors to write
/// to one. Dispose it (or let the SafeHandle finalizer free it).
/// </summary>
public sealed class TensorMap : IDisposable
{
    private readonly TensorMapHandle _handle;

    private TensorMap(TensorMapHandle handle) => _handle = handle;

    /// <summary>An empty map.</summary>
    public static TensorMap Create()
    {
        AsdException.Check(NativeMethods.asd_tensor_map_create(out IntPtr p));
        return new TensorMap(AsdHandle.Wrap<TensorMapHandle>(p));
    }

    /// <summary>Reads a safetensors file (validated before anything is allocated).
    /// <paramref name="dtype"/>: <see cref="TensorDtype.Auto"/> keeps stored types; a floating type converts floating tensors.</summary>
    /// <exception cref="AsdIOException">the file cannot be opened or read.</exception>
    /// <exception cref="AsdFormatException">the file is malformed; the message names the file and the problem.</exception>
    public static TensorMap Load(string path, TensorDtype dtype = TensorDtype.Auto)
    {
        AsdException.Check(NativeMethods.asd_safetensors_load(path, (AsdDtype)dtype, out IntPtr p));
        return new TensorMap(AsdHandle.Wrap<TensorMapHandle>(p));
    }

    /// <summary>Writes the map as safetensors atomically (temp file + rename). Metadata values are strings.</summary>
    public void Save(string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        string? json = metadata is null ? null : System.Text.Json.JsonSerializer.Serialize(metadata);
        AsdException.Check(NativeMethods.asd_safetensors_save(_handle, path, json));
    }

    public unsafe IReadOnlyList<string> Names
    {
        get
        {
            AsdException.Check(NativeMethods.asd_tensor_map_count(_handle, out long n));
            var names = new List<string>((int)n);
            for (long i = 0; i < n; i++)
            {
                AsdException.Check(NativeMethods.asd_tensor_map_name(_handle, i, out byte* s));
                names.Add(NativeMethods.FromUtf8(s));
            }
            return names;
        }
    }

    /// <exception cref="AsdNotFoundException">no tensor named <paramref name="name"/>.</exception>
    public unsafe TensorInfo Info(string name)
    {
        AsdException.Check(NativeMethods.asd_tensor_map_info(_handle, name, out _, out int ndim, null, 0));
        var shape = new long[ndim];
        fixed (long* s = shape)
        {
            AsdException.Check(NativeMethods.asd_tensor_map_info(_handle, name, out AsdDtype dtype, out _, s, ndim));
            return new TensorInfo(name, (TensorDtype)dtype, shape);
        }
    }

    /// <summary>The tensor's values converted to float32, row-major.</summary>
    public unsafe float[] GetFloat32(string name)
    {
        var data = new float[Info(name).ElementCount];
        fixed (float* d = data)
            AsdException.Check(NativeMethods.asd_tensor_map_get_f32(_handle, name, d, data.LongLength));
        return data;
    }

    /// <summary>Inserts or replaces a tensor from float32 values (row-major, prod(shape) elements), stored as <paramref name="dtype"/>.</summary>
    public unsafe void SetFloat32(string name, ReadOnlySpan<float> data, ReadOnlySpan<long> shape, TensorDtype dtype = TensorDtype.F32)
    {
        long count = 1;
        foreach (long d in shape) count *= d;
        if (count != data.Length)
            throw new ArgumentException($"tensor '{name}': {data.Length} values for shape [{string.Join(", ", shape.ToArray())}] ({count} elements)");
        fixed (float* d = data)
        fixed (long* s = shape)
            AsdException.Check(NativeMethods.asd_tensor_map_set_f32(_handle, name, d, s, shape.Length, (AsdDtype)dtype));
    }

    public void Dispose() => _handle.Dispose();
}
