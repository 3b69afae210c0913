#include "models/attention.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.h"

namespace asd::models {

namespace {

// -1: not chosen yet (ANOMALYSD_ATTENTION is read at the first call); else an AttentionKernel.
std::atomic<int> g_kernel{-1};

AttentionKernel kernel_from_environment() {
  const AttentionKernel best = kFusedAttentionAvailable ? AttentionKernel::kFused : AttentionKernel::kManual;
  const char* env = std::getenv("ANOMALYSD_ATTENTION");
  if (env == nullptr || *env == '\0') return best;
  if (std::strcmp(env, "manual") == 0) return AttentionKernel::kManual;
  if (std::strcmp(env, "fused") == 0) return best;
  throw_error(ASD_ERR_INVALID_ARGUMENT, std::string("ANOMALYSD_ATTENTION='") + env + "': expected 'fused' or 'manual'");
}

// diffusers' AttnProcessor math on head-batched [N*H, L, D] tensors. Not its baddbmm(beta = 0) on an uninitialised
// buffer: libtorch 1.13's CPU baddbmm reads that buffer for small matrices (NaN * 0 = NaN from leftover memory), so
// scores come from bmm, scaled in place.
torch::Tensor manual_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const AttentionMath& m) {
  const int64_t n = q.size(0), heads = q.size(1), lq = q.size(2), lk = k.size(2), d = q.size(3), dv = v.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const bool up = m.upcast_qk && q.scalar_type() != torch::kFloat32;
  torch::Tensor qq = q.reshape({n * heads, lq, d}), kk = k.reshape({n * heads, lk, d});
  if (up) qq = qq.to(torch::kFloat32), kk = kk.to(torch::kFloat32);
  torch::Tensor scores = torch::bmm(qq, kk.transpose(1, 2)).mul_(scale);
  if (m.causal) {
    scores.add_(torch::full({lq, lk}, -std::numeric_limits<double>::infinity(), scores.options()).triu(1));
  }
  torch::Tensor probs = m.upcast_softmax && scores.scalar_type() != torch::kFloat32 ? torch::softmax(scores, -1, torch::kFloat32)
                                                                                    : torch::softmax(scores, -1);
  scores = torch::Tensor();
  if (probs.scalar_type() != v.scalar_type()) probs = probs.to(v.scalar_type());
  return torch::bmm(probs, v.reshape({n * heads, lk, dv})).view({n, heads, lq, dv});
}

}  // namespace

const char* to_string(AttentionKernel kernel) { return kernel == AttentionKernel::kFused ? "fused" : "manual"; }

AttentionKernel attention_kernel() {
  int k = g_kernel.load(std::memory_order_relaxed);
  if (k < 0) {
    int expected = -1;
    g_kernel.compare_exchange_strong(expected, static_cast<int>(kernel_from_environment()));
    k = g_kernel.load(std::memory_order_relaxed);
  }
  return static_cast<AttentionKernel>(k);
}

void set_attention_kernel(AttentionKernel kernel) {
  if (kernel == AttentionKernel::kFused && !kFusedAttentionAvailable) {
    throw_error(ASD_ERR_UNSUPPORTED, "fused attention (at::scaled_dot_product_attention) needs libtorch >= 2.0; this is " TORCH_VERSION);
  }
  g_kernel.store(static_cast<int>(kernel), std::memory_order_relaxed);
}

std::vector<AttentionKernel> available_attention_kernels() {
  if (kFusedAttentionAvailable) return {AttentionKernel::kFused, AttentionKernel::kManual};
  return {AttentionKernel::kManual};
}

torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const AttentionMath& math) {
  require(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q, k and v must be [N, heads, L, D]");
  require(!math.causal || q.size(2) == k.size(2), "attention: a causal mask needs as many queries as keys");
#if TORCH_VERSION_MAJOR >= 2
  if (attention_kernel() == AttentionKernel::kFused) {
    // The default scale is 1/sqrt(D); is_causal masks j > i without an [L, L] mask tensor.
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/math.causal);
  }
#endif
  return manual_attention(q, k, v, math);
}

}  // namespace asd::models
