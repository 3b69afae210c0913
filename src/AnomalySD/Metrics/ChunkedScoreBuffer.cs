namespace AnomalySD.Metrics;

/// <summary>
/// Append-only float32 score storage in fixed-size chunks, optionally with an int tag per score.
/// Memory: 4 bytes per score (+4 per tag) plus at most one partly filled chunk; no reallocation
/// or copy when growing (so no 2x/3x transient as with a doubling list), and sorting is in place
/// per chunk. Chunks are sorted ascending by <see cref="SortChunks"/> and merged by <see cref="DescendingMerge"/>.
/// </summary>
internal sealed class ChunkedScoreBuffer
{
    private readonly int _chunkCapacity;
    private readonly bool _tagged;
    private readonly List<float[]> _scores = new();
    private readonly List<int[]> _tags = new();
    private int _fill;      // used entries in the last chunk
    private bool _sorted = true;

    public ChunkedScoreBuffer(int chunkCapacity, bool tagged)
    {
        if (chunkCapacity < 1) throw new ArgumentOutOfRangeException(nameof(chunkCapacity));
        _chunkCapacity = chunkCapacity;
        _tagged = tagged;
    }

    public long Count { get; private set; }

    public int ChunkCount => _scores.Count;

    public void Add(float score, int tag = 0)
    {
        if (_scores.Count == 0 || _fill == _chunkCapacity)
        {
            _scores.Add(new float[_chunkCapacity]);
            if (_tagged) _tags.Add(new int[_chunkCapacity]);
            _fill = 0;
        }
        _scores[^1][_fill] = score;
        if (_tagged) _tags[^1][_fill] = tag;
        _fill++;
        Count++;
        _sorted = false;
    }

    public void Clear()
    {
        _scores.Clear();
        _tags.Clear();
        _fill = 0;
        Count = 0;
        _sorted = true;
    }

    /// <summary>Length of chunk <paramref name="c"/>.</summary>
    public int ChunkLength(int c) => c == _scores.Count - 1 ? _fill : _chunkCapacity;

    public float[] Scores(int c) => _scores[c];

    public int Tag(int c, int i) => _tagged ? _tags[c][i] : 0;

    /// <summary>Sorts every chunk ascending in place (tags follow their scores).</summary>
    public void SortChunks()
    {
        if (_sorted) return;
        for (int c = 0; c < _scores.Count; c++)
        {
            if (_tagged) Array.Sort(_scores[c], _tags[c], 0, ChunkLength(c));
            else Array.Sort(_scores[c], 0, ChunkLength(c));
        }
        _sorted = true;
    }
}

/// <summary>
/// K-way merge of the sorted chunks of one or more <see cref="ChunkedScoreBuffer"/>s in descending score
/// order. Yields (score, stream index, tag). Equal scores from different streams/chunks come out
/// adjacent (in arbitrary order), which is all the tie-grouping sweeps need. Cost O(n log K) for K chunks,
/// with runs drained from one chunk without heap traffic while it stays on top.
/// </summary>
internal sealed class DescendingMerge
{
    private readonly ChunkedScoreBuffer[] _streams;
    private readonly List<(int Stream, int Chunk)> _cursors = new();
    private readonly int[] _position; // next index to emit, counting down; -1 = exhausted
    private readonly PriorityQueue<int, float> _heap =
        new(Comparer<float>.Create(static (a, b) => b.CompareTo(a)));
    private int _current = -1;

    public DescendingMerge(params ChunkedScoreBuffer[] streams)
    {
        _streams = streams;
        foreach (var (s, idx) in streams.Select((s, i) => (s, i)))
        {
            s.SortChunks();
            for (int c = 0; c < s.ChunkCount; c++)
                if (s.ChunkLength(c) > 0) _cursors.Add((idx, c));
        }
        _position = new int[_cursors.Count];
        for (int k = 0; k < _cursors.Count; k++)
        {
            var (s, c) = _cursors[k];
            _position[k] = _streams[s].ChunkLength(c) - 1;
            _heap.Enqueue(k, Head(k));
        }
    }

    private float Head(int k)
    {
        var (s, c) = _cursors[k];
        return _streams[s].Scores(c)[_position[k]];
    }

    public bool TryNext(out float score, out int stream, out int tag)
    {
        if (_current >= 0 && _position[_current] >= 0)
        {
            if (_heap.TryPeek(out _, out float top) && top > Head(_current))
            {
                _heap.Enqueue(_current, Head(_current));
                _current = -1;
            }
        }
        else
        {
            _current = -1;
        }
        if (_current < 0 && !_heap.TryDequeue(out _current, out _))
        {
            _current = -1;
            score = 0; stream = -1; tag = 0;
            return false;
        }
        var (s, c) = _cursors[_current];
        int i = _position[_current]--;
        score = _streams[s].Scores(c)[i];
        stream = s;
        tag = _streams[s].Tag(c, i);
        return true;
    }
}
