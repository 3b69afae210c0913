#!/usr/bin/env bash
# The libtorch matrix: builds and tests the engine against the libtorch builds that GPU users have, each inside a
# Debian 13 (trixie) root made with debootstrap and kept outside the clone, in $ANOMALYSD_MATRIX_CACHE
# (default /var/cache/anomalysd): made when missing, reused after (apt's downloads are shared by the roots).
#
#   tools/matrix.sh torch2-cpu   libtorch 2.6 CPU (Debian 13's libtorch-dev, OpenBLAS): the engine (Release), all of
#                                ctest (../shared bound read-only: the goldens at their tolerances), then dotnet test
#                                (the whole managed suite) against that engine, with the host's .NET SDK and NuGet
#                                cache bound in. Needs the host's managed build (./build.sh) first.
#   tools/matrix.sh cuda-build   libtorch-cuda 2.6 (contrib) + nvcc 12.4 (non-free), ANOMALYSD_CUDA=ON for sm_80 and
#                                sm_90 (A100, H100/H200), with tools/cuda_cmake.sh's arguments (nvcc's host compiler
#                                g++-13, the C++ code and the link by the default g++ 14): the library, tests and bench
#                                compile and link, and ctest runs with the CUDA tests skipping for want of a device.
#   tools/matrix.sh all          both, in that order.
#   tools/matrix.sh ci           what .ci/run runs: one CUDA build serves both legs, as libtorch-cuda also carries the
#                                CPU backend. cuda-build as above (its ctest runs every CPU test under libtorch 2.6),
#                                then torch2-cpu on that engine: the engine-level managed test classes ($ENGINE_TESTS
#                                below) instead of the whole managed suite, which the host already runs under 1.13.
#   tools/matrix.sh roots        only makes (or completes) the two roots.
#   tools/matrix.sh exec LEG CMD...   runs CMD in LEG's root with the leg's mounts (the clone and ../shared at their
#                                paths, the .NET SDK; the cuDNN stub on LD_LIBRARY_PATH for cuda-build), e.g. to
#                                rerun one test or time 'anomalysd bench' under libtorch 2.6.
#
# Each leg prints one line 'matrix LEG: pass ...' or 'matrix LEG: fail ...'; the script exits non-zero when a leg
# fails. Everything runs in a private mount namespace: every bind mount (the clone, ../shared, the .NET SDK, /proc,
# /dev, /sys) is undone on exit, failure or kill included, and none is ever visible outside. Run as root.
#
# Known problems of the Debian 13 packages, worked around here (see README, "On a GPU box"):
#  - nvidia-cudnn is an installer: its postinst downloads cuDNN from NVIDIA and fails without that network, leaving
#    libtorch-cuda unconfigured. The root's copy of that postinst is replaced by 'exit 0' before it runs.
#  - libtorch_cuda.so needs libcudnn.so.9, which is then absent: a stub generated from the cudnn* symbols that
#    libtorch_cuda.so imports (every call fails: CUDNN_STATUS_NOT_INITIALIZED) lets the binaries link and load. It
#    proves every other symbol resolves and the CPU paths pass under this libtorch; it proves nothing about running
#    on a GPU (nothing here has a GPU).
#  - Debian 13's nvcc 12.4 takes g++-13 as its host compiler while the default c++, libgtest.a and libtorch's libfmt
#    are GCC 14; a link by g++-13 leaves __cxa_call_terminate undefined. So nvcc uses g++-13 and g++ 14 links
#    (tools/cuda_cmake.sh says why).
#
# Environment: ANOMALYSD_MATRIX_CACHE (roots), ANOMALYSD_MATRIX_MIRROR (default http://deb.debian.org/debian),
# JOBS (parallel build jobs, default nproc), CUDA_ARCH (default '80;90').
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ANOMALYSD_MATRIX_CACHE:-/var/cache/anomalysd}"
MIRROR="${ANOMALYSD_MATRIX_MIRROR:-http://deb.debian.org/debian}"
SUITE=trixie
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
CUDA_ARCH="${CUDA_ARCH:-80;90}"
SHARED="$(cd "$REPO/.." && pwd)/shared"
DOTNET_ROOT_DIR="$(dirname "$(readlink -f "$(command -v dotnet 2>/dev/null || echo /usr/share/dotnet/dotnet)")")"
NUGET_DIR="${NUGET_PACKAGES:-$HOME/.nuget/packages}"

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

# ---------------------------------------------------------------------------------------------------------------
# A private mount namespace: mounts made below die with this process whatever happens to it.
if [[ "${ANOMALYSD_MATRIX_NS:-}" != 1 ]]; then
  (($# >= 1)) || usage
  [[ $(id -u) -eq 0 ]] || { echo "matrix: run as root (debootstrap, chroot and bind mounts)" >&2; exit 2; }
  export ANOMALYSD_MATRIX_NS=1
  exec unshare --mount --propagation private -- bash "${BASH_SOURCE[0]}" "$@"
fi

MOUNTED=()
mount_at() {  # mount_at TARGET MOUNT-ARGS...: mounts and records TARGET for undo_mounts
  local target="$1"; shift
  mkdir -p "$target"
  mount "$@" "$target"
  MOUNTED+=("$target")
}
undo_mounts() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount -R "${MOUNTED[i]}" 2>/dev/null || umount -R -l "${MOUNTED[i]}" 2>/dev/null || echo "matrix: could not unmount ${MOUNTED[i]}" >&2
  done
  MOUNTED=()
}
trap undo_mounts EXIT
trap 'exit 130' INT TERM

log() { printf '\n== matrix %s\n' "$*"; }

# Runs a command inside root $1 with a clean environment (PATH, HOME, LANG and what is passed as NAME=VALUE).
in_root() {
  local root="$1"; shift
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

# /proc, /sys and /dev for the root (apt's maintainer scripts, OpenMP, cpuinfo and the .NET runtime read them).
mount_system() {
  local root="$1"
  mount_at "$root/proc" -t proc proc
  mount_at "$root/sys" --rbind /sys
  mount_at "$root/dev" --rbind /dev
}

# ---------------------------------------------------------------------------------------------------------------
# ensure_root NAME FIXUP PACKAGES...: the root $CACHE/NAME with PACKAGES installed (apt, no recommends), made when
# missing. FIXUP (a function name or '-') runs inside the root's mounts after the packages are unpacked. A root is
# taken as done only when its stamp lists the same packages, so an interrupted or older root is completed, not reused.
ensure_root() {
  mkdir -p "$CACHE/debs"
  # One maker per root, the lock held only while making; a subshell so that its mounts are undone when it ends.
  (
    trap undo_mounts EXIT
    flock 9
    make_root "$@"
  ) 9>"$CACHE/$1.lock"
}
make_root() {
  local name="$1" fixup="$2"; shift 2
  local root="$CACHE/$name" stamp="$CACHE/$name/.anomalysd-root" want="$*"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "$name: root $root is ready"
    return 0
  fi
  if [[ ! -f "$root/.debootstrap-done" ]]; then
    log "$name: debootstrap $SUITE into $root"
    rm -rf "$root.tmp"
    debootstrap --variant=minbase --components=main,contrib,non-free --cache-dir="$CACHE/debs" "$SUITE" "$root.tmp" "$MIRROR"
    # No services start inside a build root.
    printf '#!/bin/sh\nexit 101\n' >"$root.tmp/usr/sbin/policy-rc.d"
    chmod +x "$root.tmp/usr/sbin/policy-rc.d"
    touch "$root.tmp/.debootstrap-done"
    rm -rf "$root"
    mv "$root.tmp" "$root"
  fi
  log "$name: installing $want"
  mount_system "$root"
  mount_at "$root/var/cache/apt/archives" --bind "$CACHE/debs"  # one download for every root
  in_root "$root" apt-get update -qq
  if [[ "$fixup" != - ]]; then "$fixup" "$root"; fi
  in_root "$root" apt-get install -y -q --no-install-recommends "$@"
  local p missing=()
  for p in "$@"; do
    in_root "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) || { echo "matrix: $name: not installed: ${missing[*]}" >&2; return 1; }
  undo_mounts
  printf '%s' "$want" >"$stamp"
}

# nvidia-cudnn's postinst downloads cuDNN from NVIDIA: install its dependencies, unpack it alone, replace that script
# by 'exit 0' and configure it; apt then installs the rest. cuDNN itself stays absent (the stub below stands in for
# the loader).
fix_nvidia_cudnn() {
  local root="$1" deb
  in_root "$root" dpkg-query -W -f='${Status}' nvidia-cudnn 2>/dev/null | grep -q "install ok installed" && return 0
  in_root "$root" apt-get install -y -q --no-install-recommends ca-certificates wget dpkg-dev nvidia-cuda-dev
  in_root "$root" apt-get install -y -q --download-only --no-install-recommends nvidia-cudnn
  deb="$(cd "$root" && ls var/cache/apt/archives/nvidia-cudnn_*.deb | sort -V | tail -1)"
  in_root "$root" dpkg --unpack "/$deb"
  printf '#!/bin/sh\n# tools/matrix.sh: the original downloads cuDNN from NVIDIA, which this root cannot reach.\nexit 0\n' \
    >"$root/var/lib/dpkg/info/nvidia-cudnn.postinst"
  in_root "$root" dpkg --configure nvidia-cudnn
}

# A libcudnn.so.9 that defines every cudnn* function libtorch_cuda.so imports (83 in 2.6.0+dfsg-7); each returns
# CUDNN_STATUS_NOT_INITIALIZED (1001), the version queries return 0 and cudnnGetErrorString a message. Lets the
# CUDA-linked binaries link and load; any cuDNN call fails. Written to /opt/cudnn-stub/lib inside the root.
make_cudnn_stub() {
  local root="$1" dir=/opt/cudnn-stub/lib
  [[ -f "$root$dir/libcudnn.so.9" ]] && return 0
  mkdir -p "$root$dir"
  in_root "$root" bash -c '
    set -euo pipefail
    syms=$(for f in /usr/lib/x86_64-linux-gnu/libtorch_cuda*.so*; do nm -D --undefined-only "$f"; done \
             | awk "{print \$NF}" | sed "s/@.*//" | grep "^cudnn" | sort -u)
    [[ -n "$syms" ]] || { echo "matrix: libtorch_cuda imports no cudnn symbol" >&2; exit 1; }
    {
      echo "/* Generated by tools/matrix.sh: a stand-in for cuDNN 9 (absent). Every call fails. */"
      echo "#include <stddef.h>"
      for s in $syms; do
        case "$s" in
          cudnnGetErrorString) echo "const char* $s(int s) { (void)s; return \"cuDNN is absent (tools/matrix.sh stub)\"; }" ;;
          cudnnGetVersion|cudnnGetCudartVersion|cudnnGetMaxDeviceVersion) echo "size_t $s(void) { return 0; }" ;;
          *) echo "int $s(void) { return 1001; }" ;;
        esac
      done
    } >'"$dir"'/cudnn_stub.c
    # libtorch_cuda.so asks for the symbols at version node libcudnn.so.9 (cudnnCreate@libcudnn.so.9): define them there.
    echo "libcudnn.so.9 { global: *; };" >'"$dir"'/cudnn_stub.map
    gcc-13 -shared -fPIC -O1 -Wl,-soname,libcudnn.so.9 -Wl,--version-script='"$dir"'/cudnn_stub.map -o '"$dir"'/libcudnn.so.9 '"$dir"'/cudnn_stub.c
    echo "matrix: cuDNN stub with $(echo "$syms" | wc -w) functions"'
}

CPU_ROOT=trixie-torch2-cpu
CUDA_ROOT=trixie-torch2-cuda
BUILD_PKGS=(cmake make ccache nlohmann-json3-dev libgtest-dev libbenchmark-dev ca-certificates)
# libopenblas0-openmp: with --no-install-recommends libtorch gets the reference BLAS, 10x slower.
# libicu76, libssl3t64: what the .NET runtime needs.
CPU_PKGS=(g++ libtorch-dev libopenblas0-openmp libicu76 libssl3t64 "${BUILD_PKGS[@]}")
CUDA_PKGS=(g++ g++-13 libtorch-cuda-dev nvidia-cuda-toolkit libopenblas0-openmp libicu76 libssl3t64 "${BUILD_PKGS[@]}")
# The managed test classes that drive the engine (bindings, backbone, scoring, single files, multi-resolution, serving):
# what 'ci' runs against the libtorch 2.6 engine. The rest (CLI parsing, reports, metrics by hand, checkpoint safety)
# does not depend on the libtorch and runs on the host.
ENGINE_TESTS=(NativeBoundaryTests ResNet18EngineTests ScoringApiTests SingleFileTests MultiResolutionTests ServeTests)

# Binds the clone and ../shared (read-only) at their own paths inside the root, so the paths compiled into the tests
# (ANOMALYSD_SHARED_DIR) hold there too.
mount_work() {
  local root="$1"
  mount_system "$root"
  mount_at "$root$REPO" --bind "$REPO"
  if [[ -d "$SHARED" ]]; then
    mount_at "$root$SHARED" --bind "$SHARED"
    mount -o remount,bind,ro "$root$SHARED"
  fi
}

# The roots made and mounted for each leg.
enter_torch2_cpu() {
  local root="$CACHE/$CPU_ROOT"
  ensure_root "$CPU_ROOT" - "${CPU_PKGS[@]}"
  mount_work "$root"
  mount_dotnet "$root"
}
# The host's .NET SDK (read-only) and NuGet cache, for dotnet test inside a root.
mount_dotnet() {
  local root="$1"
  mount_at "$root$DOTNET_ROOT_DIR" --bind "$DOTNET_ROOT_DIR"
  mount -o remount,bind,ro "$root$DOTNET_ROOT_DIR"
  if [[ -d "$NUGET_DIR" ]]; then mount_at "$root/root/.nuget/packages" --bind "$NUGET_DIR"; fi
}
enter_cuda_build() {
  local root="$CACHE/$CUDA_ROOT"
  ensure_root "$CUDA_ROOT" fix_nvidia_cudnn "${CUDA_PKGS[@]}"
  mount_work "$root"
  mount_dotnet "$root"
  make_cudnn_stub "$root"
}

# ctest's closing lines -> "P passed, F failed, S skipped" (skipped tests count as passed in ctest's own line).
ctest_counts() {
  awk '/tests passed, [0-9]+ tests failed out of/ {f=$4; t=$NF} /\(Skipped\)$/ {s++} END {printf "%d passed, %d failed, %d skipped", t-f-s, f, s}' "$1"
}
dotnet_counts() {
  awk '/Failed: *[0-9]+, Passed: *[0-9]+/ { for (i = 1; i <= NF; i++) { if ($i == "Failed:") f += $(i+1); if ($i == "Passed:") p += $(i+1); if ($i == "Skipped:") s += $(i+1) } }
       END {printf "%d passed, %d failed, %d skipped", p, f, s}' "$1"
}

# ccache (in each root's /var/cache/ccache) reuses precompiled-header objects only when told to ignore their
# __DATE__/__TIME__ and defines, as build.sh does.
CCACHE_SLOPPY=pch_defines,time_macros,include_file_mtime,include_file_ctime
SUMMARY=""  # set by a leg: what its summary line says after pass/fail

leg_torch2_cpu() {
  local root="$CACHE/$CPU_ROOT" build="$REPO/build/matrix/torch2-cpu" logs="$REPO/build/matrix"
  local tests_dll="$REPO/tests/AnomalySD.Tests/bin/Release/net10.0/AnomalySD.Tests.dll"
  [[ -f "$tests_dll" ]] || { SUMMARY="the managed build is missing ($tests_dll): run ./build.sh first"; return 1; }
  enter_torch2_cpu
  mkdir -p "$logs"
  local version
  version="$(in_root "$root" dpkg-query -W -f='${Version}' libtorch-dev)"
  log "torch2-cpu: build (libtorch-dev $version, Release)"
  in_root "$root" CCACHE_DIR=/var/cache/ccache CCACHE_SLOPPINESS="$CCACHE_SLOPPY" CCACHE_BASEDIR="$REPO" bash -c "
    set -euo pipefail
    cmake -S '$REPO' -B '$build' -DCMAKE_BUILD_TYPE=Release -DANOMALYSD_CUDA=OFF
    cmake --build '$build' -j $JOBS"
  log "torch2-cpu: ctest"
  local ok=0
  in_root "$root" bash -c "ctest --test-dir '$build' --output-on-failure" 2>&1 | tee "$logs/torch2-cpu.ctest.log" || ok=1
  log "torch2-cpu: dotnet test against $build/native/libanomalysd.so"
  engine_reports_libtorch "$root" "$build/native" "$version"
  managed_tests "$root" "$build/native" "$logs/torch2-cpu.dotnet.log" || ok=1
  SUMMARY="libtorch $version CPU; ctest $(ctest_counts "$logs/torch2-cpu.ctest.log"); dotnet test $(dotnet_counts "$logs/torch2-cpu.dotnet.log")"
  return "$ok"
}

# The environment that makes the host's managed build load the engine in $1 (and the cuDNN stub where there is one).
engine_env() {
  printf '%s\n' DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_CLI_WORKLOAD_UPDATE_NOTIFY_DISABLE=true \
    "DOTNET_ROOT=$DOTNET_ROOT_DIR" "ANOMALYSD_NATIVE_PATH=$1" LD_LIBRARY_PATH=/opt/cudnn-stub/lib \
    "ANOMALYSD_RESNET18=$REPO/build/native/native/resnet18_imagenet.safetensors"
}
# Proof that the managed host loads the engine in $2 (inside root $1), not the 1.13 copy beside it: the CLI reports
# libtorch $3. Fails the leg otherwise.
engine_reports_libtorch() {
  local root="$1" engine="$2" version="$3" info env
  mapfile -t env < <(engine_env "$engine")
  info="$(in_root "$root" "${env[@]}" "$REPO/src/AnomalySD.Cli/bin/Release/net10.0/anomalysd" info)"
  echo "$info"
  grep -Eq "^libtorch +${version%%+*}$" <<<"$info" && return 0
  SUMMARY="the managed host did not load the libtorch $version engine"
  return 1
}
# dotnet test of the host's managed build against the engine in $2 (inside root $1), logged to $3; further arguments
# go to dotnet test (e.g. --filter). The ResNet18 backbone comes from the host build (weights do not depend on the
# libtorch).
managed_tests() {
  local root="$1" engine="$2" log="$3" env; shift 3
  mapfile -t env < <(engine_env "$engine")
  in_root "$root" "${env[@]}" "$DOTNET_ROOT_DIR/dotnet" test "$REPO/AnomalySD.sln" -c Release --no-build -nologo "$@" 2>&1 | tee "$log"
}

leg_cuda_build() {
  local root="$CACHE/$CUDA_ROOT" build="$REPO/build/matrix/cuda" logs="$REPO/build/matrix"
  enter_cuda_build
  mkdir -p "$logs"
  local version nvcc
  version="$(in_root "$root" dpkg-query -W -f='${Version}' libtorch-cuda-dev)"
  nvcc="$(in_root "$root" nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  log "cuda-build: build (libtorch-cuda-dev $version, nvcc $nvcc with g++-13, CUDA_ARCH $CUDA_ARCH)"
  in_root "$root" CCACHE_DIR=/var/cache/ccache CCACHE_SLOPPINESS="$CCACHE_SLOPPY" CCACHE_BASEDIR="$REPO" LD_LIBRARY_PATH=/opt/cudnn-stub/lib CUDA_ARCH="$CUDA_ARCH" bash -c "
    set -euo pipefail
    source '$REPO/tools/cuda_cmake.sh'
    mapfile -t args < <(cuda_cmake_args)
    cmake -S '$REPO' -B '$build' -DCMAKE_BUILD_TYPE=Release \"\${args[@]}\"
    cmake --build '$build' -j $JOBS
    for f in native/libanomalysd.so native/tests/anomalysd_tests native/bench/anomalysd_bench; do
      test -f '$build'/\$f || { echo \"matrix: \$f was not built\" >&2; exit 1; }
    done
    # The engine must load libtorch_cuda itself (its static initialisers register the CUDA backend), also when the
    # managed host loads it alone.
    readelf -d '$build'/native/libanomalysd.so | grep -q 'NEEDED.*libtorch_cuda' ||
      { echo 'matrix: libanomalysd.so does not link libtorch_cuda' >&2; exit 1; }"
  log "cuda-build: ctest (no device: the CUDA tests skip)"
  local ok=0
  in_root "$root" LD_LIBRARY_PATH=/opt/cudnn-stub/lib bash -c "ctest --test-dir '$build' --output-on-failure" 2>&1 |
    tee "$logs/cuda-build.ctest.log" || ok=1
  SUMMARY="libtorch-cuda $version, nvcc $nvcc, sm_${CUDA_ARCH//;/+sm_}; library, tests and bench linked; ctest $(ctest_counts "$logs/cuda-build.ctest.log") (cuDNN stub)"
  return "$ok"
}

# 'ci': the torch2-cpu leg on the cuda-build leg's engine (run after it): the CPU backend of libtorch-cuda 2.6 is the
# libtorch 2.6 CPU code; its ctest is the cuda-build leg's, which runs every CPU test.
leg_torch2_cpu_ci() {
  local root="$CACHE/$CUDA_ROOT" build="$REPO/build/matrix/cuda" logs="$REPO/build/matrix"
  local tests_dll="$REPO/tests/AnomalySD.Tests/bin/Release/net10.0/AnomalySD.Tests.dll"
  [[ -f "$tests_dll" ]] || { SUMMARY="the managed build is missing ($tests_dll): run ./build.sh first"; return 1; }
  [[ -f "$build/native/libanomalysd.so" ]] || { SUMMARY="no cuda-build engine in $build: the cuda-build leg runs first"; return 1; }
  enter_cuda_build
  local version filter="" c
  version="$(in_root "$root" dpkg-query -W -f='${Version}' libtorch-cuda-dev)"
  for c in "${ENGINE_TESTS[@]}"; do filter+="${filter:+|}FullyQualifiedName~AnomalySD.Tests.$c"; done
  log "torch2-cpu (ci): engine-level dotnet tests against the cuda-build engine, CPU backend of libtorch-cuda $version"
  local ok=0
  engine_reports_libtorch "$root" "$build/native" "$version"
  managed_tests "$root" "$build/native" "$logs/torch2-cpu.dotnet.log" --filter "$filter" || ok=1
  SUMMARY="libtorch $version CPU backend (the cuda-build engine); ctest: the cuda-build run, $(ctest_counts "$logs/cuda-build.ctest.log"); dotnet test ${ENGINE_TESTS[*]}: $(dotnet_counts "$logs/torch2-cpu.dotnet.log")"
  return "$ok"
}

# ---------------------------------------------------------------------------------------------------------------
# The whole command in one function, called from the last line: bash has read all of it before it runs, so editing
# this file while a run is under way cannot change what that run does.
main() {
  if [[ "$1" == exec ]]; then
    (($# >= 3)) || usage
    local root extra
    case "$2" in
      torch2-cpu)
        enter_torch2_cpu
        root="$CACHE/$CPU_ROOT"
        extra=(DOTNET_ROOT="$DOTNET_ROOT_DIR" PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:$DOTNET_ROOT_DIR" DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1)
        ;;
      cuda-build) enter_cuda_build; root="$CACHE/$CUDA_ROOT"; extra=(LD_LIBRARY_PATH=/opt/cudnn-stub/lib) ;;
      *) usage ;;
    esac
    shift 2
    set +e
    in_root "$root" "${extra[@]}" bash -c "cd '$PWD' && exec \"\$@\"" bash "$@"
    return $?
  fi

  local legs=() a
  for a in "$@"; do
    case "$a" in
      torch2-cpu | cuda-build) legs+=("$a") ;;
      all) legs+=(torch2-cpu cuda-build) ;;
      ci) legs+=(cuda-build torch2-cpu-ci) ;;
      roots)
        ensure_root "$CPU_ROOT" - "${CPU_PKGS[@]}"
        ensure_root "$CUDA_ROOT" fix_nvidia_cudnn "${CUDA_PKGS[@]}"
        ;;
      *) usage ;;
    esac
  done

  local failed=0 summaries=() leg start rc summary_file
  summary_file="$(mktemp)"
  for leg in "${legs[@]}"; do
    start=$SECONDS
    SUMMARY=""
    # Each leg in a subshell: its failure (set -e) ends the leg, not the script; its mounts are undone when it ends.
    set +e
    (
      set -e
      trap 'printf "%s" "$SUMMARY" >"$summary_file"; undo_mounts' EXIT
      "leg_${leg//-/_}"
    )
    rc=$?
    set -e
    SUMMARY="$(cat "$summary_file")"
    leg="${leg%-ci}"  # the summary names the leg, whichever way it ran
    if ((rc == 0)); then
      summaries+=("matrix $leg: pass ($SUMMARY; $((SECONDS - start)) s)")
    else
      failed=1
      summaries+=("matrix $leg: fail (exit $rc${SUMMARY:+; $SUMMARY}; $((SECONDS - start)) s; log above)")
    fi
  done
  rm -f "$summary_file"
  echo
  printf '%s\n' "${summaries[@]}"
  return "$failed"
}

main "$@"; exit $?
