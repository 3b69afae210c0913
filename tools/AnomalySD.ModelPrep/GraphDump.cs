using System.Globalization;
using Onnx;

namespace AnomalySD.ModelPrep;

/// <summary>Human-readable node list of an ONNX model: op type, name, inputs (with initializer shapes), outputs, attributes.</summary>
public static class GraphDump
{
    public static void Write(ModelProto model, TextWriter w)
    {
        GraphProto g = model.Graph;
        w.WriteLine($"ir_version={model.IrVersion} producer='{model.ProducerName} {model.ProducerVersion}' opset={string.Join(",", model.OpsetImport.Select(o => $"{o.Domain}:{o.Version}"))}");
        var init = g.Initializer.ToDictionary(t => t.Name);
        foreach (var i in g.Input.Where(i => !init.ContainsKey(i.Name))) w.WriteLine($"input  {i.Name} [{Shape(i)}]");
        foreach (var o in g.Output) w.WriteLine($"output {o.Name} [{Shape(o)}]");
        foreach (NodeProto n in g.Node)
        {
            string ins = string.Join(", ", n.Input.Select(i => init.TryGetValue(i, out var t) ? $"{i}[{string.Join("x", t.Dims)}]" : i));
            w.WriteLine($"{n.OpType} {n.Name}: ({ins}) -> ({string.Join(", ", n.Output)}) {string.Join(" ", n.Attribute.Select(Attr))}");
        }
        w.WriteLine($"{g.Initializer.Count} initializers, {g.Initializer.Sum(t => t.Dims.Aggregate(1L, (a, b) => a * b))} values");
    }

    private static string Shape(ValueInfoProto v) =>
        string.Join("x", v.Type.TensorType.Shape.Dim.Select(d => d.DimParam is { Length: > 0 } p ? p : d.DimValue.ToString(CultureInfo.InvariantCulture)));

    private static string Attr(AttributeProto a) => a.Name + "=" + a.Type switch
    {
        AttributeProto.Types.AttributeType.Ints => "[" + string.Join(",", a.Ints) + "]",
        AttributeProto.Types.AttributeType.Int => a.I.ToString(CultureInfo.InvariantCulture),
        AttributeProto.Types.AttributeType.Float => a.F.ToString("R", CultureInfo.InvariantCulture),
        AttributeProto.Types.AttributeType.Floats => "[" + string.Join(",", a.Floats.Select(f => f.ToString("R", CultureInfo.InvariantCulture))) + "]",
        AttributeProto.Types.AttributeType.String => a.S.ToStringUtf8(),
        _ => a.Type.ToString(),
    };
}
