// C API: errors, versions, devices, threads, seeds, live-object count.
#include <algorithm>
#include <chrono>
#include <cstring>

#include <torch/torch.h>
#include <torch/version.h>
#include <torch/cuda.h>
#include <fstream>
#include <string>
#ifdef ANOMALYSD_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "anomalysd.h"
#include "api/guard.h"
#include "api/handles.h"
#include "core/live_objects.h"

namespace asd::api {

namespace {
thread_local std::string g_last_error;
}

void set_last_error(const std::string& message) noexcept {
  try {
    g_last_error = message;
  } catch (...) {
    // Assigning can only fail for lack of memory; keep the previous message rather than throwing.
  }
}

asd_status fail(asd_status status, const std::string& message) noexcept {
  set_last_error(message);
  return status;
}

}  // namespace asd::api

using asd::api::not_null;

extern "C" {

ASD_API const char* asd_last_error(void) { return asd::api::g_last_error.c_str(); }

ASD_API asd_status asd_engine_version(const char** out_version) {
  return ASD_GUARD({ *not_null(out_version, "out_version") = ANOMALYSD_VERSION; });
}

ASD_API asd_status asd_torch_version(const char** out_version) {
  return ASD_GUARD({ *not_null(out_version, "out_version") = TORCH_VERSION; });
}

ASD_API asd_status asd_built_with_cuda(int32_t* out_flag) {
#ifdef ANOMALYSD_WITH_CUDA
  return ASD_GUARD({ *not_null(out_flag, "out_flag") = 1; });
#else
  return ASD_GUARD({ *not_null(out_flag, "out_flag") = 0; });
#endif
}

ASD_API asd_status asd_cuda_device_count(int32_t* out_available, int32_t* out_count) {
  return ASD_GUARD({
    not_null(out_available, "out_available");
    not_null(out_count, "out_count");
    const bool available = torch::cuda::is_available();
    *out_count = available ? static_cast<int32_t>(torch::cuda::device_count()) : 0;
    *out_available = available ? 1 : 0;
  });
}

ASD_API asd_status asd_cuda_device_name(int32_t index, char* buffer, size_t capacity) {
  return ASD_GUARD({
    not_null(buffer, "buffer");
    asd::require(capacity > 0, "capacity must be > 0");
    const int64_t count = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    if (index < 0 || index >= count) {
      asd::throw_error(ASD_ERR_NOT_FOUND, "no CUDA device " + std::to_string(index) + " (" + std::to_string(count) + " available)");
    }
#ifdef ANOMALYSD_WITH_CUDA
    const std::string name = at::cuda::getDeviceProperties(index)->name;
#else
    const std::string name = "cuda:" + std::to_string(index);  // names need the CUDA runtime (ANOMALYSD_CUDA=ON)
#endif
    const size_t n = std::min(capacity - 1, name.size());
    std::memcpy(buffer, name.data(), n);
    buffer[n] = '\0';
  });
}

ASD_API asd_status asd_get_num_threads(int32_t* out_threads) {
  return ASD_GUARD({ *not_null(out_threads, "out_threads") = static_cast<int32_t>(torch::get_num_threads()); });
}

ASD_API asd_status asd_set_num_threads(int32_t threads) {
  return ASD_GUARD({
    asd::require(threads >= 1, "threads must be >= 1, got " + std::to_string(threads));
    torch::set_num_threads(threads);
  });
}

ASD_API asd_status asd_manual_seed(uint64_t seed) {
  return ASD_GUARD({ torch::manual_seed(seed); });
}

namespace {
bool is_cuda_device(const char* device) { return asd::api::parse_device_name(device).cuda; }
[[maybe_unused]] int cuda_index(const char* device) { return asd::api::parse_device_name(device).index; }
}  // namespace

ASD_API asd_status asd_peak_memory_reset(const char* device) {
  return ASD_GUARD({
    if (is_cuda_device(device)) {
#ifdef ANOMALYSD_WITH_CUDA
      c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
      return;
#else
      asd::throw_error(ASD_ERR_UNSUPPORTED, "this build has no CUDA support");
#endif
    }
    std::ofstream clear("/proc/self/clear_refs");
    if (!clear) asd::throw_error(ASD_ERR_UNSUPPORTED, "cannot reset the peak resident set on this platform");
    clear << "5";
  });
}

ASD_API asd_status asd_peak_memory(const char* device, int64_t* out_bytes) {
  return ASD_GUARD({
    not_null(out_bytes, "out_bytes");
    if (is_cuda_device(device)) {
#ifdef ANOMALYSD_WITH_CUDA
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device));
      *out_bytes = stats.allocated_bytes[0].peak;  // StatType::AGGREGATE
      return;
#else
      asd::throw_error(ASD_ERR_UNSUPPORTED, "this build has no CUDA support");
#endif
    }
    std::ifstream status("/proc/self/status");
    std::string key;
    while (status >> key) {
      if (key == "VmHWM:") {
        int64_t kb = 0;
        status >> kb;
        *out_bytes = kb * 1024;
        return;
      }
      std::getline(status, key);
    }
    asd::throw_error(ASD_ERR_UNSUPPORTED, "no peak resident set (VmHWM) on this platform");
  });
}

ASD_API asd_status asd_gemm_peak_gflops(const char* device, asd_dtype dtype, int64_t n, double* out_gflops) {
  return ASD_GUARD({
    not_null(out_gflops, "out_gflops");
    asd::require(n >= 64 && n <= 16384, "n must be in [64, 16384]");
    const torch::Device d = asd::api::parse_device(device);
    const auto t = asd::api::to_torch_dtype(dtype == ASD_DTYPE_AUTO ? ASD_DTYPE_F32 : dtype);
    asd::require(*t == torch::kFloat32 || *t == torch::kFloat16 || *t == torch::kBFloat16, "dtype must be F32, F16 or BF16");
    c10::InferenceMode inference;
    const auto options = torch::TensorOptions().device(d).dtype(*t);
    const torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
    torch::Tensor c = torch::empty({n, n}, options);
    auto sync = [&] {
      if (d.is_cuda()) torch::cuda::synchronize(d.index());
    };
    double best = 0;
    for (int rep = 0; rep < 7; ++rep) {  // 2 warm-ups, then the best of 5
      sync();
      const auto start = std::chrono::steady_clock::now();
      torch::mm_out(c, a, b);
      sync();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (rep >= 2 && seconds > 0) best = std::max(best, 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / seconds / 1e9);
    }
    *out_gflops = best;
  });
}

ASD_API asd_status asd_live_objects(int64_t* out_count) {
  return ASD_GUARD({ *not_null(out_count, "out_count") = asd::live_object_counter().load(); });
}

}  // extern "C"
