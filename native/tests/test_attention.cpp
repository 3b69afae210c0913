// The attention kernels of models/attention.h against a hand computation in float64 (every kernel this libtorch has),
// the fused kernel against the manual one at the models' sizes (libtorch >= 2.0), and the kernel switch.
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "models/attention.h"
#include "test_util.h"

using asd::models::AttentionKernel;
using asd::models::AttentionMath;
using asd::models::ScopedAttentionKernel;

namespace {

// softmax(q kᵀ / sqrt(D) + mask) v by loops in float64: out[n,h,i,:] = Σ_j p_ij v[n,h,j,:],
// p_ij = exp(s_ij - max_j s) / Σ_j exp(s_ij - max_j s), s_ij = q_i·k_j / sqrt(D), s_ij = -inf for j > i when causal.
torch::Tensor reference(const torch::Tensor& q64, const torch::Tensor& k64, const torch::Tensor& v64, bool causal) {
  const auto q = q64.contiguous(), k = k64.contiguous(), v = v64.contiguous();
  const int64_t N = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2), D = q.size(3), Dv = v.size(3);
  auto out = torch::zeros({N, H, Lq, Dv}, torch::kFloat64);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < Lq; ++i) {
        std::vector<double> s(Lk, -std::numeric_limits<double>::infinity());
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Lk && (!causal || j <= i); ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qa[n][h][i][d] * ka[n][h][j][d];
          s[j] = dot / std::sqrt(static_cast<double>(D));
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < Lk; ++j) z += std::exp(s[j] - m);
        for (int64_t j = 0; j < Lk; ++j) {
          const double p = std::exp(s[j] - m) / z;
          for (int64_t d = 0; d < Dv; ++d) oa[n][h][i][d] += p * va[n][h][j][d];
        }
      }
    }
  }
  return out;
}

struct Case {
  int64_t n, heads, lq, lk, d;
  bool causal;
};

}  // namespace

TEST(Attention, EveryKernelMatchesAHandComputation) {
  torch::manual_seed(7);
  // self-attention, cross-attention (77 keys, as the prompt context), VAE-like single head, CLIP-like causal
  const std::vector<Case> cases = {{2, 4, 16, 16, 8, false}, {1, 2, 40, 77, 16, false}, {1, 1, 64, 64, 32, false}, {2, 4, 77, 77, 16, true}};
  for (const auto kernel : asd::models::available_attention_kernels()) {
    ScopedAttentionKernel use(kernel);
    EXPECT_EQ(asd::models::attention_kernel(), kernel);
    for (const Case& c : cases) {
      // [N,L,H,D] transposed to [N,H,L,D]: the strided views the models pass.
      const auto q = torch::randn({c.n, c.lq, c.heads, c.d}).transpose(1, 2);
      const auto k = torch::randn({c.n, c.lk, c.heads, c.d}).transpose(1, 2);
      const auto v = torch::randn({c.n, c.lk, c.heads, c.d}).transpose(1, 2);
      AttentionMath math;
      math.causal = c.causal;
      const torch::Tensor out = asd::models::attend(q, k, v, math);
      const torch::Tensor expected = reference(q.to(torch::kFloat64), k.to(torch::kFloat64), v.to(torch::kFloat64), c.causal);
      const double err = asd::test::max_abs_error(out, expected);
      EXPECT_LE(err, 1e-5) << asd::models::to_string(kernel) << " attention, Lq " << c.lq << ", Lk " << c.lk << ", causal " << c.causal;
      if (c.causal) {
        // Row 0 sees only key 0: its output is v[...,0,:] exactly (softmax of one element is 1).
        EXPECT_LE(asd::test::max_abs_error(out.select(2, 0), v.select(2, 0)), 1e-6) << asd::models::to_string(kernel);
      }
    }
  }
}

TEST(Attention, FusedMatchesManualAtTheModelsSizes) {
  if (!asd::models::kFusedAttentionAvailable) GTEST_SKIP() << "fused attention needs libtorch >= 2.0";
  torch::manual_seed(11);
  // SD 2 UNet self-attention at a 32x32 latent (5 heads of 64), its cross-attention on a shared 77-token context
  // (batch folded into the query rows), and the ViT-H text encoder's causal attention (16 heads of 64).
  const std::vector<Case> cases = {{2, 5, 1024, 1024, 64, false}, {1, 5, 4 * 1024, 77, 64, false}, {2, 16, 77, 77, 64, true}};
  for (const Case& c : cases) {
    const auto q = torch::randn({c.n, c.heads, c.lq, c.d}), k = torch::randn({c.n, c.heads, c.lk, c.d}), v = torch::randn({c.n, c.heads, c.lk, c.d});
    AttentionMath math;
    math.causal = c.causal;
    torch::Tensor fused, manual;
    {
      ScopedAttentionKernel use(AttentionKernel::kFused);
      fused = asd::models::attend(q, k, v, math);
    }
    {
      ScopedAttentionKernel use(AttentionKernel::kManual);
      manual = asd::models::attend(q, k, v, math);
    }
    EXPECT_LE(asd::test::max_abs_error(fused, manual), 1e-5) << "Lq " << c.lq << ", Lk " << c.lk << ", causal " << c.causal;
  }
}

TEST(Attention, KernelSwitch) {
  const AttentionKernel before = asd::models::attention_kernel();
  const auto kernels = asd::models::available_attention_kernels();
  EXPECT_EQ(kernels.back(), AttentionKernel::kManual);
  EXPECT_EQ(kernels.size(), asd::models::kFusedAttentionAvailable ? 2u : 1u);
  if (!asd::models::kFusedAttentionAvailable) {
    try {
      asd::models::set_attention_kernel(AttentionKernel::kFused);
      ADD_FAILURE() << "fused attention accepted under libtorch " << TORCH_VERSION;
    } catch (const asd::Error& e) {
      EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED);
      EXPECT_NE(std::string(e.what()).find("libtorch >= 2.0"), std::string::npos) << e.what();
    }
    EXPECT_EQ(asd::models::attention_kernel(), AttentionKernel::kManual);
  }
  {
    ScopedAttentionKernel use(AttentionKernel::kManual);
    EXPECT_EQ(asd::models::attention_kernel(), AttentionKernel::kManual);
  }
  EXPECT_EQ(asd::models::attention_kernel(), before);  // restored
  try {
    const auto q = torch::zeros({1, 1, 3, 4}), k = torch::zeros({1, 1, 5, 4});
    AttentionMath math;
    math.causal = true;
    asd::models::attend(q, k, k, math);
    ADD_FAILURE() << "a causal mask over 3 queries and 5 keys was accepted";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_INVALID_ARGUMENT);
  }
}
