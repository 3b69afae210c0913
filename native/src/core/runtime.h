// Process-wide runtime defaults of the engine, applied once before the first C API call runs.
#pragma once

namespace asd {

/// Applies the defaults once (thread-safe, idempotent):
///  - CPU threads: ANOMALYSD_NUM_THREADS if set, else OMP_NUM_THREADS if set (libtorch reads it), else all
///    hardware threads. Debian's libtorch otherwise starts with omp_get_max_threads(), which was 1 on the
///    2-core CI machine.
void ensure_runtime_initialized();

}  // namespace asd
