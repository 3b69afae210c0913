// The attention product softmax(Q Kᵀ / sqrt(D) + mask) V of every model (UNet and VAE through blocks.h's Attention,
// the CLIP text encoder), computed by one of two kernels:
//  - fused:  at::scaled_dot_product_attention (libtorch >= 2.0). Flash / memory-efficient kernels on CUDA, a fused
//            flash kernel on the CPU: the [L, L] score matrix is never held whole.
//  - manual: bmm + softmax + bmm (diffusers' AttnProcessor math). The only kernel under libtorch 1.13.
// The default is fused where it exists. ANOMALYSD_ATTENTION=manual (read once, at the first attention call) forces the
// manual kernel under 2.x, e.g. to compare time and peak memory with `anomalysd bench`.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>

namespace asd::models {

/// Version shim (libtorch < 2.0 has no at::scaled_dot_product_attention): true when the fused kernel is compiled in.
#if TORCH_VERSION_MAJOR >= 2
inline constexpr bool kFusedAttentionAvailable = true;
#else
inline constexpr bool kFusedAttentionAvailable = false;
#endif

enum class AttentionKernel { kFused, kManual };

/// "fused" / "manual".
const char* to_string(AttentionKernel kernel);

/// The kernel in use: set_attention_kernel's, else ANOMALYSD_ATTENTION's ("fused" or "manual"; any other value is an
/// ASD_ERR_INVALID_ARGUMENT naming the variable), else fused where available. Asking for fused under libtorch 1.13
/// falls back to manual (there is no other kernel).
AttentionKernel attention_kernel();

/// Overrides the kernel for the whole process (tests, benchmarks). ASD_ERR_UNSUPPORTED for kFused under libtorch < 2.0.
void set_attention_kernel(AttentionKernel kernel);

/// The kernels this build can run: {manual} under 1.13, {fused, manual} under 2.x.
std::vector<AttentionKernel> available_attention_kernels();

/// Sets a kernel for one scope and restores the previous one.
class ScopedAttentionKernel {
 public:
  explicit ScopedAttentionKernel(AttentionKernel kernel) : previous_(attention_kernel()) { set_attention_kernel(kernel); }
  ~ScopedAttentionKernel() { set_attention_kernel(previous_); }
  ScopedAttentionKernel(const ScopedAttentionKernel&) = delete;
  ScopedAttentionKernel& operator=(const ScopedAttentionKernel&) = delete;

 private:
  AttentionKernel previous_;
};

/// The scale of Q Kᵀ is 1/sqrt(D) in every model here (diffusers' Attention, CLIPAttention).
struct AttentionMath {
  bool causal = false;          ///< query i attends to keys j <= i only (CLIP's text encoder; needs Lq == Lk)
  bool upcast_qk = false;       ///< manual kernel: Q Kᵀ and the softmax in float32 (diffusers' upcast_attention)
  bool upcast_softmax = false;  ///< manual kernel: the softmax in float32
};

/// softmax(q kᵀ / sqrt(D) (+ causal mask)) v for q [N,H,Lq,D], k [N,H,Lk,D], v [N,H,Lk,Dv] -> [N,H,Lq,Dv] (views and
/// non-contiguous strides accepted), through attention_kernel(). The fused kernel ignores the upcast flags, as
/// diffusers' AttnProcessor2_0 does: its CPU and CUDA kernels accumulate half-precision inputs in float32 (the math
/// fallback too, from libtorch 2.5).
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const AttentionMath& math);

}  // namespace asd::models
