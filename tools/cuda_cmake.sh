# Sourced, not run: the CMake arguments of a CUDA build of the engine, one place for tools/matrix.sh (its cuda-build
# leg, inside a Debian 13 root) and tools/gpu_check.sh (on a GPU box), so both compile the same way.
#
#   cuda_cmake_args [GTEST_SOURCE_DIR]   prints the arguments, one per line
#
# - Architectures: $CUDA_ARCH, default '80;90' (A100, H100/H200): SASS for both, PTX for 90. cmake/AnomalySDTorch.cmake
#   hands the same list to torch's CMake config (TORCH_CUDA_ARCH_LIST), which would otherwise add sm_50 ... sm_90a.
# - Compilers: nvcc 12.4 takes GCC <= 13 as its host compiler, so nvcc compiles with g++-13 when it is installed
#   ($CUDA_HOST_CXX overrides; else c++). The C++ code is compiled and linked by the default c++, the compiler of the
#   libtorch and of its dependencies. Linking with g++-13 instead links GCC 13's libstdc++.so, which lacks
#   __cxa_call_terminate (CXXABI_1.3.15): Debian 13's GCC 14 builds of libgtest.a and of libfmt.so.10 (that libtorch
#   needs) call it, and the executables do not link. Objects of GCC 13 (the .cu files' host code) link with GCC 14's
#   libstdc++, as libstdc++ is backward compatible.
# - GoogleTest: the installed package, or built from GTEST_SOURCE_DIR by the same c++ (machines without it).
cuda_host_cxx() {
  if [[ -n "${CUDA_HOST_CXX:-}" ]]; then
    echo "$CUDA_HOST_CXX"
  elif command -v g++-13 >/dev/null; then
    command -v g++-13
  else
    command -v c++
  fi
}

cuda_cmake_args() {
  printf '%s\n' -DANOMALYSD_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-80;90}" "-DCMAKE_CUDA_HOST_COMPILER=$(cuda_host_cxx)"
  [[ -z "${1:-}" ]] || printf '%s\n' "-DANOMALYSD_GTEST_SOURCE_DIR=$1"
}
