#include "core/runtime.h"

#include <cstdlib>
#include <mutex>
#include <thread>

#include <torch/torch.h>

namespace asd {

void ensure_runtime_initialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    int threads = 0;
    if (const char* env = std::getenv("ANOMALYSD_NUM_THREADS")) threads = std::atoi(env);
    if (threads <= 0 && std::getenv("OMP_NUM_THREADS") == nullptr) threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads > 0) torch::set_num_threads(threads);
  });
}

}  // namespace asd
