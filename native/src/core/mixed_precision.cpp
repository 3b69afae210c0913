#include "core/mixed_precision.h"

#include "core/error.h"

// libtorch 2.4 replaced the per-backend autocast setters (set_enabled, set_cpu_enabled, set_autocast_gpu_dtype,
// ...) by device-type ones; the old names are deprecated there. Use whichever the libtorch at hand has.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define ASD_AUTOCAST_BY_DEVICE_TYPE 1
#endif

namespace asd {

namespace {

bool autocast_enabled(bool cuda) {
#ifdef ASD_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

at::ScalarType autocast_dtype(bool cuda) {
#ifdef ASD_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

void set_autocast(bool cuda, bool enabled, at::ScalarType dtype) {
#ifdef ASD_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, enabled);
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, dtype);
#else
  if (cuda) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

}  // namespace

MixedPrecision parse_mixed_precision(const std::string& name) {
  if (name == "no" || name == "none" || name.empty()) return MixedPrecision::kNone;
  if (name == "bf16") return MixedPrecision::kBF16;
  if (name == "fp16") return MixedPrecision::kFP16;
  throw_error(ASD_ERR_INVALID_ARGUMENT, "mixed_precision must be \"no\", \"bf16\" or \"fp16\", got \"" + name + "\"");
}

std::string to_string(MixedPrecision p) {
  switch (p) {
    case MixedPrecision::kBF16: return "bf16";
    case MixedPrecision::kFP16: return "fp16";
    default: return "no";
  }
}

void check_mixed_precision(MixedPrecision precision, const torch::Device& device, torch::ScalarType weights_dtype) {
  if (precision == MixedPrecision::kNone) return;
  require(weights_dtype == torch::kFloat32,
          "mixed_precision " + to_string(precision) + " keeps fp32 master weights: load the model as F32 (it is " +
              std::string(c10::toString(weights_dtype)) + ")");
  require(precision != MixedPrecision::kFP16 || device.is_cuda(),
          "mixed_precision fp16 needs a CUDA device (libtorch's CPU autocast is bf16 only); use bf16 on the CPU");
}

AutocastGuard::AutocastGuard(const torch::Device& device, MixedPrecision precision) {
  if (precision == MixedPrecision::kNone) return;
  active_ = true;
  cuda_ = device.is_cuda();
  previous_enabled_ = autocast_enabled(cuda_);
  previous_dtype_ = autocast_dtype(cuda_);
  set_autocast(cuda_, true, precision == MixedPrecision::kFP16 ? at::kHalf : at::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(cuda_, previous_enabled_, previous_dtype_);
}

void LossScaler::backward(const torch::Tensor& loss) const { (enabled_ ? loss * scale_ : loss).backward(); }

bool LossScaler::step(torch::optim::Optimizer& optimizer) {
  bool finite = true;
  if (enabled_) {
    std::vector<torch::Tensor> parameters;
    for (const auto& group : optimizer.param_groups()) parameters.insert(parameters.end(), group.params().begin(), group.params().end());
    finite = unscale_and_check(parameters);
  }
  if (finite) optimizer.step();
  update(finite);
  return finite;
}

bool LossScaler::unscale_and_check(const std::vector<torch::Tensor>& parameters) const {
  if (!enabled_) return true;
  torch::NoGradGuard no_grad;
  torch::Tensor all_finite;  // one device-side flag, read back once (a single host sync per step)
  for (const torch::Tensor& p : parameters) {
    torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    g.div_(scale_);
    const torch::Tensor finite = torch::isfinite(g).all();
    all_finite = all_finite.defined() ? all_finite.logical_and(finite) : finite;
  }
  return !all_finite.defined() || all_finite.item<bool>();
}

void LossScaler::update(bool finite) {
  if (!enabled_) return;
  if (!finite) {
    scale_ *= 0.5;
    growth_tracker_ = 0;
    return;
  }
  if (++growth_tracker_ >= growth_interval_) {
    scale_ *= 2.0;
    growth_tracker_ = 0;
  }
}


CpuBf16TrainingGuard::CpuBf16TrainingGuard(const torch::Device& device, MixedPrecision precision) {
#if TORCH_VERSION_MAJOR >= 2
  if (device.is_cpu() && precision == MixedPrecision::kBF16) {
    active_ = true;
    previous_ = at::globalContext().userEnabledMkldnn();
    at::globalContext().setUserEnabledMkldnn(false);
  }
#else
  (void)device;
  (void)precision;
#endif
}

CpuBf16TrainingGuard::~CpuBf16TrainingGuard() {
  if (active_) at::globalContext().setUserEnabledMkldnn(previous_);
}

}  // namespace asd
