#!/usr/bin/env bash
# The GPU check: builds the engine with CUDA against the libtorch inside python3's torch, runs the native test
# suite (CUDA tests included) and the CUDA benchmarks. Made for a bare GPU machine without network access
# (python3 with a CUDA torch, nvcc and cmake present; no GoogleTest, Google Benchmark or nlohmann-json).
#
#   tools/gpu_check.sh prepare   on a machine with the Debian packages (the dev box): stages what the GPU machine
#                                lacks in .gpu/ (git-ignored): nlohmann-json and Google Benchmark from /usr, the
#                                GoogleTest sources from /usr/src/googletest, and ../shared/golden + weights (the reference
#                                vectors the tests read). Nothing of it is committed.
#   tools/gpu_check.sh run       on the GPU machine, from the repository root, with .gpu/ carried along. Writes
#                                nvidia-smi.txt, build.log, ctest.log and bench.log to $OUT (default build/gpu-out).
#   tools/gpu_check.sh clean     removes .gpu/.
#
# It configures exactly as the cuda-build leg of tools/matrix.sh (tools/cuda_cmake.sh: CUDA_ARCH '80;90', nvcc's host
# compiler g++-13 when installed, the C++ code by the default c++), so what links there links here.
#
# Environment: CUDA_ARCH (default '80;90': A100, H100/H200), CUDA_HOST_CXX (default g++-13 if installed, else c++),
# JOBS (default nproc), BENCH_FILTER (default 'Cuda').
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="$ROOT/.gpu"
MODE="${1:-}"

prepare() {
  rm -rf "$STAGE"
  local lib="$STAGE/deps/lib/x86_64-linux-gnu"  # Debian's layout: its CMake configs find the files relative to themselves
  mkdir -p "$STAGE/deps/include" "$lib/cmake" "$STAGE/deps/share/cmake" "$STAGE/src" "$STAGE/shared"
  cp -r /usr/include/nlohmann /usr/include/benchmark "$STAGE/deps/include/"
  cp -r /usr/share/cmake/nlohmann_json "$STAGE/deps/share/cmake/"
  cp -P /usr/lib/x86_64-linux-gnu/libbenchmark.so* /usr/lib/x86_64-linux-gnu/libbenchmark_main.a "$lib/"
  cp -r /usr/lib/x86_64-linux-gnu/cmake/benchmark "$lib/cmake/"
  cp -r /usr/src/googletest "$STAGE/src/googletest"
  cp -r "$ROOT/../shared/golden" "$ROOT/../shared/weights" "$STAGE/shared/"
  du -sh "$STAGE"
}

run() {
  [[ -d "$STAGE/deps" ]] || { echo "gpu_check: .gpu/ is missing: run 'tools/gpu_check.sh prepare' first and carry .gpu" >&2; exit 2; }
  local out="${OUT:-$ROOT/build/gpu-out}" build="$ROOT/build/gpu"
  mkdir -p "$out"
  nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
  if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
  command -v nvcc >/dev/null || { echo "gpu_check: nvcc not found (PATH or /usr/local/cuda/bin)" | tee "$out/build.log" >&2; exit 2; }
  local torch_prefix
  torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$out/build.log"
  local generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # shellcheck source=tools/cuda_cmake.sh
  source "$ROOT/tools/cuda_cmake.sh"
  local cuda_args
  mapfile -t cuda_args < <(cuda_cmake_args "$STAGE/src/googletest")
  echo "nvcc host compiler: $(cuda_host_cxx) ($("$(cuda_host_cxx)" -dumpfullversion)); c++ $(c++ -dumpfullversion); CUDA_ARCH ${CUDA_ARCH:-80;90}" | tee -a "$out/build.log"
  cmake -S "$ROOT" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$STAGE/deps" 2>&1 | tee -a "$out/build.log"
  cmake --build "$build" -j "${JOBS:-$(nproc)}" 2>&1 | tee -a "$out/build.log"
  export LD_LIBRARY_PATH="$STAGE/deps/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  # The native tests read ../shared/golden and ../shared/weights; the staged copies stand in.
  export ANOMALYSD_SHARED_DIR="$STAGE/shared"
  (cd "$build" && ctest -j 4 --output-on-failure --timeout 600 2>&1) | tee "$out/ctest.log" || true
  "$build/native/bench/anomalysd_bench" --benchmark_filter="${BENCH_FILTER:-Cuda}" 2>&1 | tee "$out/bench.log" || true
}

case "$MODE" in
  prepare) prepare ;;
  run) run ;;
  clean) rm -rf "$STAGE" ;;
  *) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
