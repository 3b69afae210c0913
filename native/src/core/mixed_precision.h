// Mixed-precision training: libtorch autocast (fp32 master weights, matmuls and convolutions in bf16 or fp16)
// and, for fp16, dynamic loss scaling as in torch.cuda.amp.GradScaler.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

namespace asd {

/// Training precision: kNone (everything in the model dtype), kBF16 (autocast to bfloat16: CPU and CUDA, no
/// loss scaling needed, same exponent range as fp32) or kFP16 (autocast to float16 with dynamic loss scaling:
/// CUDA only).
enum class MixedPrecision { kNone, kBF16, kFP16 };

/// "no" | "bf16" | "fp16" -> MixedPrecision; ASD_ERR_INVALID_ARGUMENT for anything else.
MixedPrecision parse_mixed_precision(const std::string& name);
std::string to_string(MixedPrecision p);

/// Checks that `precision` can run on `device` with weights in `weights_dtype`: mixed precision needs fp32
/// master weights, and fp16 autocast needs CUDA (libtorch's CPU autocast is bf16 only).
void check_mixed_precision(MixedPrecision precision, const torch::Device& device, torch::ScalarType weights_dtype);

/// RAII: autocast on `device`'s type to `precision` for the scope (nothing for kNone). Restores the previous
/// state and clears the cast cache when the outermost guard ends. Backward passes belong outside the scope.
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, MixedPrecision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
};

/// RAII, a libtorch 2.x shim: for a bf16 training step on the CPU (forward and backward), oneDNN is switched off
/// (at::Context::setUserEnabledMkldnn(false); ATen's own kernels run the bf16 convolutions and matmuls) and restored
/// after. Under libtorch 2.6 with oneDNN on AVX-512 CPUs, bf16 autocast training of the UNet turns its weights to NaN
/// after the first step (measured on an AMD EPYC with avx512_bf16; the same test learns with ONEDNN_MAX_CPU_ISA=AVX2 and
/// under libtorch 1.13). Nothing under libtorch 1.x, for other precisions or on CUDA. The switch is process-wide: a
/// process that trains in bf16 on the CPU should not score at the same time.
class CpuBf16TrainingGuard {
 public:
  CpuBf16TrainingGuard(const torch::Device& device, MixedPrecision precision);
  ~CpuBf16TrainingGuard();
  CpuBf16TrainingGuard(const CpuBf16TrainingGuard&) = delete;
  CpuBf16TrainingGuard& operator=(const CpuBf16TrainingGuard&) = delete;

 private:
  bool active_ = false;
  bool previous_ = true;
};

/// Dynamic loss scaling for fp16 (the GradScaler rule): the loss is multiplied by scale() before backward;
/// unscale_and_check divides the gradients by it and reports whether they are all finite. On overflow the step
/// is skipped and the scale halves; after `growth_interval` finite steps in a row it doubles.
class LossScaler {
 public:
  explicit LossScaler(bool enabled, double initial_scale = 65536.0, int64_t growth_interval = 2000)
      : enabled_(enabled), scale_(enabled ? initial_scale : 1.0), growth_interval_(growth_interval) {}

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  void set_state(double scale, int64_t growth_tracker) {
    scale_ = scale;
    growth_tracker_ = growth_tracker;
  }

  /// loss.backward() on the scaled loss (loss x scale() when enabled). Call outside the autocast scope.
  void backward(const torch::Tensor& loss) const;
  /// Unscales the gradients of `optimizer`'s parameters, steps it if they are all finite (skips otherwise) and
  /// updates the scale; returns whether it stepped. Without scaling: a plain optimizer.step().
  bool step(torch::optim::Optimizer& optimizer);

  /// Divides every defined gradient by scale(); true if all of them are finite afterwards.
  bool unscale_and_check(const std::vector<torch::Tensor>& parameters) const;
  /// The scale update after a step: `finite` = unscale_and_check's answer.
  void update(bool finite);

 private:
  bool enabled_;
  double scale_;
  int64_t growth_interval_;
  int64_t growth_tracker_ = 0;
};

}  // namespace asd
