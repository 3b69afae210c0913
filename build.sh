#!/usr/bin/env bash
# AnomalySD build script (Linux).
#
#   ./build.sh          install what is missing (apt), build the native engine (Release) and the .NET solution
#   ./build.sh test     the same, then run ctest and dotnet test; exits non-zero if any test fails
#   ./build.sh native   only the native engine          ./build.sh managed   only the .NET solution
#
# Environment:
#   TORCH_DIR=<dir>      use another libtorch instead of Debian's libtorch-dev: a libtorch prefix (holding
#                        share/cmake/Torch), the Torch cmake dir itself, or a python torch's cmake prefix
#                        (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
#   ANOMALYSD_CUDA=ON    compile the CUDA kernels (needs a CUDA libtorch and nvcc)
#   BUILD_TYPE=Release   CMake build type          JOBS=<n>   parallel build jobs (default: nproc)
#   SKIP_APT=1           do not call apt-get (dependencies already installed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE="${1:-build}"
BUILD_TYPE="${BUILD_TYPE:-Release}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
NATIVE_BUILD="$ROOT/build/native"

log() { printf '\n== %s\n' "$*"; }

install_deps() {
  [[ "${SKIP_APT:-0}" == 1 ]] && return 0
  command -v apt-get >/dev/null || { echo "build.sh: no apt-get; install cmake, g++, libtorch, nlohmann-json, gtest by hand" >&2; return 0; }
  local pkgs=(cmake g++ make ccache nlohmann-json3-dev libgtest-dev libbenchmark-dev libopenblas0-openmp)
  # Debian's libtorch is the default; a user-given TORCH_DIR replaces it.
  [[ -z "${TORCH_DIR:-}" ]] && pkgs+=(libtorch-dev)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing: ${missing[*]}"
  local sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

torch_args() {
  [[ -z "${TORCH_DIR:-}" ]] && return 0
  if [[ -f "$TORCH_DIR/TorchConfig.cmake" ]]; then
    echo "-DTorch_DIR=$TORCH_DIR"
  elif [[ -d "$TORCH_DIR/share/cmake/Torch" ]]; then
    echo "-DTorch_DIR=$TORCH_DIR/share/cmake/Torch"
  elif [[ -f "$TORCH_DIR/Torch/TorchConfig.cmake" ]]; then
    echo "-DTorch_DIR=$TORCH_DIR/Torch"
  else
    echo "build.sh: TORCH_DIR=$TORCH_DIR holds no TorchConfig.cmake" >&2
    exit 2
  fi
}

build_native() {
  log "native engine ($BUILD_TYPE, CUDA=${ANOMALYSD_CUDA:-OFF})"
  # ccache (the compiler launcher when installed) can only reuse objects built with precompiled headers when
  # told to ignore the PCH's __DATE__/__TIME__ and defines.
  export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
  # Paths under the clone hashed relative to it: another clone of the same sources (CI's) reuses the objects.
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
  # shellcheck disable=SC2046
  cmake -S "$ROOT" -B "$NATIVE_BUILD" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DANOMALYSD_CUDA="${ANOMALYSD_CUDA:-OFF}" $(torch_args)
  cmake --build "$NATIVE_BUILD" -j "$JOBS"
}

build_managed() {
  command -v dotnet >/dev/null || { echo "build.sh: the .NET SDK (dotnet, 10.0) is required" >&2; exit 2; }
  log ".NET solution (restore + build)"
  dotnet build "$ROOT/AnomalySD.sln" -c Release -nologo -v quiet -p:AnomalySDNativeDir="$NATIVE_BUILD/native/"
  ANOMALYSD_NATIVE_PATH="$NATIVE_BUILD/native" dotnet run --project "$ROOT/tools/AnomalySD.ModelPrep" -c Release --no-build -- resnet18 --out "$NATIVE_BUILD/native/resnet18_imagenet.safetensors" \
    || echo "build.sh: WARNING: could not write $NATIVE_BUILD/native/resnet18_imagenet.safetensors (ImageNet ResNet18 backbone; see the message above). The build goes on; rerun ./build.sh managed once the cause is fixed." >&2
}

run_tests() {
  local failed=0 out counts
  out="$(mktemp)"
  log "native tests (ctest)"
  ctest --test-dir "$NATIVE_BUILD" --output-on-failure 2>&1 | tee "$out" || failed=1
  # "100% tests passed, 0 tests failed out of 13" counts skipped tests (listed as "(Skipped)") as passed
  counts="$(awk '/tests passed, [0-9]+ tests failed out of/ {f=$4; t=$NF} /\(Skipped\)$/ {s++} END {print t-f-s, f, s+0}' "$out")"
  log "managed tests (dotnet test)"
  dotnet test "$ROOT/AnomalySD.sln" -c Release --no-build -nologo 2>&1 | tee "$out" || failed=1
  # "Passed!  - Failed:     0, Passed:     7, Skipped:     0, Total:     7"
  counts="$counts $(awk '/Failed: *[0-9]+, Passed: *[0-9]+/ {
      for (i = 1; i <= NF; i++) { if ($i == "Failed:") f += $(i+1); if ($i == "Passed:") p += $(i+1); if ($i == "Skipped:") s += $(i+1) } }
      END {print p+0, f+0, s+0}' "$out")"
  rm -f "$out"
  read -r np nf ns mp mf ms <<<"$counts"
  echo
  echo "tests: $((np + mp)) passed, $((nf + mf)) failed, $((ns + ms)) skipped (CUDA tests skip without a GPU)"
  return "$failed"
}

case "$MODE" in
  build) install_deps; build_native; build_managed ;;
  native) install_deps; build_native ;;
  managed) build_managed ;;
  test) install_deps; build_native; build_managed; run_tests ;;
  clean) rm -rf "$ROOT/build"; dotnet clean "$ROOT/AnomalySD.sln" -nologo -v quiet >/dev/null 2>&1 || true ;;
  *) echo "usage: ./build.sh [build|test|native|managed|clean]" >&2; exit 1 ;;
esac
