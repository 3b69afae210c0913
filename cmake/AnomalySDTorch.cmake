# Finds libtorch and sets up the compiler for it.
#
# Which libtorch: Debian's libtorch-dev (CPU, 1.13) is found by default. Any other build (a CUDA libtorch,
# a newer release, the one inside a python torch) is chosen with -DTorch_DIR=<prefix>/share/cmake/Torch or
# -DCMAKE_PREFIX_PATH=<prefix>; build.sh passes TORCH_DIR through as both.
# Known trap: torch's CMake config adds -D_GLIBCXX_USE_CXX11_ABI=<0|1> to TORCH_CXX_FLAGS; every TU that
# includes torch headers must use the same value, so we add TORCH_CXX_FLAGS globally.

if(ANOMALYSD_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # The GPU of the build machine (CMake >= 3.24), else a broad default; override with -DCMAKE_CUDA_ARCHITECTURES.
    if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.24)
      set(CMAKE_CUDA_ARCHITECTURES native)
    else()
      set(CMAKE_CUDA_ARCHITECTURES 70 80 90)
    endif()
  endif()
  enable_language(CUDA)
  # CMake puts nvcc's implicit link directories on the link line of every target with CUDA objects, ahead of the C++
  # compiler's own. When nvcc's host compiler is another GCC than the C++ compiler (Debian 13: g++-13 for nvcc 12.4,
  # g++ 14 for C++), that holds the other GCC's libstdc++.so (/usr/lib/gcc/x86_64-linux-gnu/13), which the link then
  # takes: GCC 13's lacks __cxa_call_terminate (CXXABI_1.3.15), which the GCC 14 code (ours, libgtest.a, libtorch's
  # libfmt.so.10) calls. Drop such directories; the C++ compiler links its own libstdc++.
  set(_asd_cuda_link_dirs ${CMAKE_CUDA_IMPLICIT_LINK_DIRECTORIES})
  foreach(dir IN LISTS _asd_cuda_link_dirs)
    if(EXISTS "${dir}/libstdc++.so" AND NOT dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
      list(REMOVE_ITEM CMAKE_CUDA_IMPLICIT_LINK_DIRECTORIES "${dir}")
      message(STATUS "AnomalySD: not linking nvcc's host compiler libraries from ${dir}")
    endif()
  endforeach()
  # Torch's CMake config appends -gencode flags of its own to CMAKE_CUDA_FLAGS: for TORCH_CUDA_ARCH_LIST, else for
  # the GPU it detects, else for a list of common architectures (libtorch-cuda 2.6: sm_50 to sm_90a). Keep the kernels
  # to CMAKE_CUDA_ARCHITECTURES: 80;90 -> TORCH_CUDA_ARCH_LIST 8.0;9.0 (not for 'native', 'all' or 'all-major').
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND CMAKE_CUDA_ARCHITECTURES MATCHES "^[0-9]")
    set(TORCH_CUDA_ARCH_LIST "")
    foreach(arch IN LISTS CMAKE_CUDA_ARCHITECTURES)
      string(REGEX REPLACE "-(real|virtual)$" "" arch "${arch}")
      string(REGEX REPLACE "^([0-9]+)([0-9])(a?)$" "\\1.\\2\\3" arch "${arch}")
      list(APPEND TORCH_CUDA_ARCH_LIST "${arch}")
    endforeach()
  endif()
endif()

find_package(Torch REQUIRED)
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

# The C++ standard follows the libtorch: its headers need C++17 from 2.1 and C++20 from 2.12 (they stop with
# "#error C++20 or later compatible compiler is required to use ATen"); 1.13 accepts 17. Override with
# -DANOMALYSD_CXX_STANDARD=17|20. The engine's own code compiles as either.
if(NOT ANOMALYSD_CXX_STANDARD)
  if(Torch_VERSION VERSION_GREATER_EQUAL 2.12)
    set(ANOMALYSD_CXX_STANDARD 20)
  else()
    set(ANOMALYSD_CXX_STANDARD 17)
  endif()
endif()
set(CMAKE_CXX_STANDARD ${ANOMALYSD_CXX_STANDARD})
set(CMAKE_CXX_STANDARD_REQUIRED ON)
if(ANOMALYSD_CUDA)
  set(CMAKE_CUDA_STANDARD ${ANOMALYSD_CXX_STANDARD})
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
endif()
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)

find_program(ANOMALYSD_CCACHE ccache)
if(ANOMALYSD_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER "${ANOMALYSD_CCACHE}")
endif()

# Torch_VERSION is set by TorchConfigVersion.cmake; report it so build logs say which libtorch was used.
message(STATUS "AnomalySD: libtorch ${Torch_VERSION} at ${Torch_DIR}; C++${ANOMALYSD_CXX_STANDARD}; CUDA kernels: ${ANOMALYSD_CUDA}")
