// mask_concat (eq. 11): [z_t; z°; m̃] along channels, CPU path always, CUDA path when available.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "kernels/mask_concat.h"

namespace {
void check_layout(const torch::Tensor& out, const torch::Tensor& z, const torch::Tensor& ml, const torch::Tensor& m) {
  const int64_t B = z.size(0);
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({B, 9, z.size(2), z.size(3)}));
  EXPECT_TRUE(torch::equal(out.narrow(1, 0, 4), z));
  EXPECT_TRUE(torch::equal(out.narrow(1, 4, 4), ml.expand({B, 4, z.size(2), z.size(3)})));
  EXPECT_TRUE(torch::equal(out.narrow(1, 8, 1), m.expand({B, 1, z.size(2), z.size(3)})));
}
}  // namespace

TEST(MaskConcat, CpuLayoutBatchedAndBroadcast) {
  torch::manual_seed(0);
  const auto z = torch::randn({3, 4, 5, 6});
  const auto ml = torch::randn({3, 4, 5, 6});
  const auto m = (torch::rand({3, 1, 5, 6}) > 0.5).to(torch::kFloat32);
  const auto out = asd::kernels::mask_concat(z, ml, m);
  check_layout(out, z, ml, m);
  // Equal to torch::cat, the reference definition.
  EXPECT_TRUE(torch::equal(out, torch::cat({z, ml, m}, 1)));
  // z° and m̃ of one image shared by the batch.
  const auto out1 = asd::kernels::mask_concat(z, ml.narrow(0, 0, 1), m.narrow(0, 1, 1));
  check_layout(out1, z, ml.narrow(0, 0, 1), m.narrow(0, 1, 1));
}

TEST(MaskConcat, LatentsOnlyRewritesJustTheNoisyChannels) {
  const auto z = torch::full({2, 4, 3, 3}, 1.0f);
  const auto ml = torch::full({2, 4, 3, 3}, 2.0f);
  const auto m = torch::full({2, 1, 3, 3}, 1.0f);
  auto out = asd::kernels::mask_concat(z, ml, m);
  const auto z2 = torch::full({2, 4, 3, 3}, 7.0f);
  asd::kernels::mask_concat(z2, ml, m, out, /*latents_only=*/true);
  EXPECT_EQ(out.narrow(1, 0, 4).min().item<float>(), 7.0f);
  EXPECT_EQ(out.narrow(1, 4, 4).max().item<float>(), 2.0f);
  EXPECT_EQ(out.narrow(1, 8, 1).sum().item<float>(), 18.0f);  // 2 x 3 x 3 ones
}

TEST(MaskConcat, ShapeErrorsAreReported) {
  const auto z = torch::zeros({2, 4, 8, 8});
  try {
    asd::kernels::mask_concat(z, torch::zeros({2, 4, 8, 8}), torch::zeros({2, 1, 4, 4}));
    FAIL() << "expected an error";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("mask must be [B or 1, 1, h, w]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(asd::kernels::mask_concat(z, torch::zeros({3, 4, 8, 8}), torch::zeros({2, 1, 8, 8})), asd::Error);
  EXPECT_THROW(asd::kernels::mask_concat(z, torch::zeros({2, 4, 8, 8}), torch::zeros({2, 1, 8, 8}), torch::zeros({2, 8, 8, 8})), asd::Error);
}

TEST(MaskConcat, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(1);
  for (auto dtype : {torch::kFloat32, torch::kFloat16, torch::kBFloat16}) {
    const auto z = torch::randn({5, 4, 16, 16}).to(dtype);
    const auto ml = torch::randn({1, 4, 16, 16}).to(dtype);
    const auto m = (torch::rand({5, 1, 16, 16}) > 0.5).to(dtype);
    const auto cpu = asd::kernels::mask_concat(z, ml, m);
    const auto gpu = asd::kernels::mask_concat(z.cuda(), ml.cuda(), m.cuda());
    EXPECT_TRUE(torch::equal(gpu.cpu(), cpu)) << dtype;
  }
}

TEST(Require, LazyMessageIsFormattedOnlyOnFailure) {
  int formatted = 0;
  auto message = [&] {
    ++formatted;
    return std::string("shape ") + std::to_string(7);
  };
  asd::require(true, message);
  EXPECT_EQ(formatted, 0) << "a passing check must not build its message";
  try {
    asd::require(false, message);
    FAIL() << "require(false, ...) must throw";
  } catch (const asd::Error& e) {
    EXPECT_EQ(formatted, 1);
    EXPECT_EQ(e.status(), ASD_ERR_INVALID_ARGUMENT);
    EXPECT_STREQ(e.what(), "shape 7");
  }
  EXPECT_THROW(asd::require(false, "literal"), asd::Error);
}
