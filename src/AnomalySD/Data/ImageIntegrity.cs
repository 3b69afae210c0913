using System.Buffers.Binary;
using System.Text;

namespace AnomalySD.Data;

/// <summary>
/// Checks that an image file's data does not end early. ImageSharp decodes what a truncated file holds and fills the rest
/// (a PNG cut to 90 % of its length scored 936 where the whole file scored 667), so a file is first walked by its container
/// structure, without decoding pixels, and refused when a chunk, segment, strip or pixel array runs past its end or its
/// terminator is missing:
/// <list type="bullet">
/// <item>PNG: every chunk's length inside the file, through IEND (PNG 1.2, section 5);</item>
/// <item>JPEG: segments through the entropy-coded scans to the EOI marker FFD9 (ITU T.81, annex B);</item>
/// <item>BMP: the pixel array (offset + stride × height; or the compressed size) inside the file;</item>
/// <item>GIF: blocks and sub-blocks through the trailer 0x3B (GIF89a, sections 17-27);</item>
/// <item>TIFF: every IFD, and every strip or tile (offset + byte count), inside the file (TIFF 6.0, section 2);</item>
/// <item>WebP: the RIFF size and every chunk inside the file;</item>
/// <item>TGA: the pixel data (raw, or run-length packets for every pixel) inside the file;</item>
/// <item>PBM/PGM/PPM: the binary raster (or every sample of the plain form) present.</item>
/// </list>
/// </summary>
public static class ImageIntegrity
{
    /// <summary>Returns null when <paramref name="data"/> (the whole file, of format <paramref name="format"/> as ImageSharp names
    /// it: "PNG", "JPEG", ...) is complete, else the problem ("the file ends inside chunk IDAT ...").</summary>
    public static string? Problem(string format, ReadOnlySpan<byte> data)
    {
        try
        {
            return format.ToUpperInvariant() switch
            {
                "PNG" => Png(data),
                "JPEG" => Jpeg(data),
                "BMP" => Bmp(data),
                "GIF" => Gif(data),
                "TIFF" => Tiff(data),
                "WEBP" => Webp(data),
                "TGA" => Tga(data),
                "PBM" => Pbm(data),
                _ => null,
            };
        }
        catch (IndexOutOfRangeException) { return Ends("its header"); }
        catch (ArgumentOutOfRangeException) { return Ends("its header"); }
    }

    private static string Ends(string where) => $"truncated: the file ends inside {where}";

    private static string? Png(ReadOnlySpan<byte> d)
    {
        long pos = 8;
        bool image = false;
        while (true)
        {
            if (pos + 8 > d.Length) return Ends(image ? "the chunks after the image data (no IEND chunk)" : "the chunk list, before the image data");
            long length = BinaryPrimitives.ReadUInt32BigEndian(d.Slice((int)pos, 4));
            string type = Encoding.ASCII.GetString(d.Slice((int)pos + 4, 4));
            if (pos + 12 + length > d.Length) return Ends($"chunk {type} at byte {pos} ({length} bytes of data announced, {Math.Max(0, d.Length - pos - 12)} present)");
            if (type == "IDAT") image = true;
            if (type == "IEND") return image ? null : "truncated: no IDAT chunk before IEND";
            pos += 12 + length;
        }
    }

    private static string? Jpeg(ReadOnlySpan<byte> d)
    {
        int pos = 2;
        while (pos < d.Length)
        {
            if (d[pos] != 0xFF) return $"corrupt: no JPEG marker at byte {pos}";
            while (pos < d.Length && d[pos] == 0xFF) pos++; // fill bytes
            if (pos >= d.Length) break;
            byte marker = d[pos++];
            if (marker == 0xD9) return null; // EOI
            if (marker is 0x01 or (>= 0xD0 and <= 0xD7)) continue; // TEM, RSTn: no length
            if (pos + 2 > d.Length) break;
            int length = BinaryPrimitives.ReadUInt16BigEndian(d.Slice(pos, 2));
            if (length < 2 || pos + length > d.Length) return Ends($"segment FF{marker:X2} at byte {pos - 2}");
            pos += length;
            if (marker != 0xDA) continue;
            // Entropy-coded data of a scan: runs to the next marker that is not a stuffed 0xFF00 or a restart marker.
            while (pos + 1 < d.Length && !(d[pos] == 0xFF && d[pos + 1] != 0x00 && d[pos + 1] is not (>= 0xD0 and <= 0xD7))) pos++;
            if (pos + 1 >= d.Length) return Ends("the scan data (no EOI marker FFD9)");
        }
        return Ends("the segments (no EOI marker FFD9)");
    }

    private static string? Bmp(ReadOnlySpan<byte> d)
    {
        long offset = BinaryPrimitives.ReadUInt32LittleEndian(d.Slice(10, 4));
        int headerSize = (int)BinaryPrimitives.ReadUInt32LittleEndian(d.Slice(14, 4));
        long width, height;
        int bpp;
        uint compression = 0, imageSize = 0;
        if (headerSize == 12) // OS/2 BITMAPCOREHEADER
        {
            width = BinaryPrimitives.ReadUInt16LittleEndian(d.Slice(18, 2));
            height = BinaryPrimitives.ReadUInt16LittleEndian(d.Slice(20, 2));
            bpp = BinaryPrimitives.ReadUInt16LittleEndian(d.Slice(24, 2));
        }
        else
        {
            width = BinaryPrimitives.ReadInt32LittleEndian(d.Slice(18, 4));
            height = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(d.Slice(22, 4)));
            bpp = BinaryPrimitives.ReadUInt16LittleEndian(d.Slice(28, 2));
            compression = BinaryPrimitives.ReadUInt32LittleEndian(d.Slice(30, 4));
            imageSize = BinaryPrimitives.ReadUInt32LittleEndian(d.Slice(34, 4));
        }
        long required = compression is 0 or 3 or 6 ? offset + (width * bpp + 31) / 32 * 4 * height : offset + imageSize;
        return required > d.Length ? Ends($"the pixel array ({required} bytes needed, {d.Length} present)") : null;
    }

    private static string? Gif(ReadOnlySpan<byte> d)
    {
        int pos = 13;
        if ((d[10] & 0x80) != 0) pos += 3 << ((d[10] & 7) + 1);
        while (true)
        {
            if (pos >= d.Length) return Ends("the blocks (no trailer 0x3B)");
            byte block = d[pos++];
            if (block == 0x3B) return null;
            if (block == 0x21) pos++; // extension label
            else if (block == 0x2C)
            {
                if (pos + 9 > d.Length) return Ends($"the image descriptor at byte {pos - 1}");
                byte flags = d[pos + 8];
                pos += 9;
                if ((flags & 0x80) != 0) pos += 3 << ((flags & 7) + 1);
                pos++; // LZW minimum code size
            }
            else return $"corrupt: unknown GIF block 0x{block:X2} at byte {pos - 1}";
            while (true) // data sub-blocks up to the 0 terminator
            {
                if (pos >= d.Length) return Ends("a block's data");
                int size = d[pos++];
                if (size == 0) break;
                pos += size;
            }
        }
    }

    private static string? Tiff(ReadOnlySpan<byte> d)
    {
        bool little = d[0] == (byte)'I';
        uint U32(ReadOnlySpan<byte> s, long at) => little ? BinaryPrimitives.ReadUInt32LittleEndian(s.Slice((int)at, 4)) : BinaryPrimitives.ReadUInt32BigEndian(s.Slice((int)at, 4));
        ushort U16(ReadOnlySpan<byte> s, long at) => little ? BinaryPrimitives.ReadUInt16LittleEndian(s.Slice((int)at, 2)) : BinaryPrimitives.ReadUInt16BigEndian(s.Slice((int)at, 2));
        if (U16(d, 2) == 43) return null; // BigTIFF: not walked (ImageSharp 2.1 does not read it either)
        long ifd = U32(d, 4);
        for (int n = 0; ifd != 0 && n < 1024; n++)
        {
            if (ifd + 2 > d.Length) return Ends($"IFD {n} at byte {ifd}");
            int entries = U16(d, ifd);
            if (ifd + 2 + 12L * entries + 4 > d.Length) return Ends($"IFD {n} at byte {ifd}");
            var offsets = new List<long>();
            var counts = new List<long>();
            for (int e = 0; e < entries; e++)
            {
                long at = ifd + 2 + 12L * e;
                ushort tag = U16(d, at), type = U16(d, at + 2);
                long count = U32(d, at + 4);
                if (tag is not (273 or 279 or 324 or 325)) continue;
                int size = type == 3 ? 2 : 4;
                long values = size * count <= 4 ? at + 8 : U32(d, at + 8);
                if (values + size * count > d.Length) return Ends($"the {(tag is 273 or 324 ? "offsets" : "byte counts")} of IFD {n}");
                var list = tag is 273 or 324 ? offsets : counts;
                for (long i = 0; i < count; i++) list.Add(size == 2 ? U16(d, values + 2 * i) : U32(d, values + 4 * i));
            }
            for (int i = 0; i < Math.Min(offsets.Count, counts.Count); i++)
                if (offsets[i] + counts[i] > d.Length) return Ends($"strip or tile {i} of IFD {n} ({offsets[i] + counts[i]} bytes needed, {d.Length} present)");
            ifd = U32(d, ifd + 2 + 12L * entries);
        }
        return null;
    }

    private static string? Webp(ReadOnlySpan<byte> d)
    {
        long riff = BinaryPrimitives.ReadUInt32LittleEndian(d.Slice(4, 4)) + 8L;
        if (riff > d.Length) return Ends($"the RIFF container ({riff} bytes announced, {d.Length} present)");
        long pos = 12;
        while (pos + 8 <= riff)
        {
            long size = BinaryPrimitives.ReadUInt32LittleEndian(d.Slice((int)pos + 4, 4));
            if (pos + 8 + size > riff) return Ends($"chunk {Encoding.ASCII.GetString(d.Slice((int)pos, 4))} at byte {pos}");
            pos += 8 + size + (size & 1);
        }
        return null;
    }

    private static string? Tga(ReadOnlySpan<byte> d)
    {
        int idLength = d[0], colorMapType = d[1], imageType = d[2];
        int mapLength = BinaryPrimitives.ReadUInt16LittleEndian(d.Slice(5, 2)), mapBits = d[7];
        long width = BinaryPrimitives.ReadUInt16LittleEndian(d.Slice(12, 2)), height = BinaryPrimitives.ReadUInt16LittleEndian(d.Slice(14, 2));
        int pixelBytes = (d[16] + 7) / 8;
        long pos = 18 + idLength + (colorMapType == 1 ? mapLength * ((mapBits + 7) / 8) : 0);
        long pixels = width * height;
        if (imageType is 1 or 2 or 3) return pos + pixels * pixelBytes > d.Length ? Ends($"the pixel data ({pos + pixels * pixelBytes} bytes needed, {d.Length} present)") : null;
        if (imageType is not (9 or 10 or 11)) return null;
        for (long done = 0; done < pixels;)
        {
            if (pos >= d.Length) return Ends($"the run-length pixel data ({done} of {pixels} pixels present)");
            int header = d[(int)pos++];
            int count = (header & 0x7F) + 1;
            pos += (header & 0x80) != 0 ? pixelBytes : (long)count * pixelBytes;
            done += count;
        }
        return pos > d.Length ? Ends("the last run-length packet") : null;
    }

    private static string? Pbm(ReadOnlySpan<byte> d)
    {
        char kind = (char)d[1];
        int pos = 2;
        long Next(ReadOnlySpan<byte> s)
        {
            while (pos < s.Length && (char.IsWhiteSpace((char)s[pos]) || s[pos] == '#'))
                if (s[pos] == '#') { while (pos < s.Length && s[pos] != '\n') pos++; }
                else pos++;
            long v = 0;
            int start = pos;
            while (pos < s.Length && s[pos] is >= (byte)'0' and <= (byte)'9') v = v * 10 + (s[pos++] - '0');
            return pos > start ? v : -1;
        }
        long width = Next(d), height = Next(d), maxValue = kind is '1' or '4' ? 1 : Next(d);
        if (width < 0 || height < 0 || maxValue < 0) return Ends("its header");
        long channels = kind is '3' or '6' ? 3 : 1, samples = width * height * channels;
        if (kind is '4' or '5' or '6')
        {
            long bytes = kind == '4' ? (width + 7) / 8 * height : samples * (maxValue > 255 ? 2 : 1);
            return pos + 1 + bytes > d.Length ? Ends($"the raster ({pos + 1 + bytes} bytes needed, {d.Length} present)") : null;
        }
        for (long i = 0; i < samples; i++)
        {
            if (kind == '1')
            {
                while (pos < d.Length && d[pos] is not ((byte)'0' or (byte)'1')) pos++;
                if (pos++ >= d.Length) return Ends($"the samples ({i} of {samples} present)");
            }
            else if (Next(d) < 0) return Ends($"the samples ({i} of {samples} present)");
        }
        return null;
    }
}
