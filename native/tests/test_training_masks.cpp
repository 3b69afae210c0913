// Training-mask sampler (section 4.1): IoU(m_r, m_f) > γ acceptance, γ in {0, 0.2, 0.5}.
#include <map>
#include <random>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "pipeline/training_masks.h"

using namespace asd::pipeline;

TEST(TrainingMasks, IouByHand) {
  // Foreground: the 4x4 square [2,6)x[2,6) of a 10x10 image (16 px).
  torch::Tensor fg = torch::zeros({10, 10});
  fg.narrow(0, 2, 4).narrow(1, 2, 4).fill_(1);
  MaskIntegral m(fg);
  EXPECT_EQ(m.total(), 16);
  EXPECT_DOUBLE_EQ(m.iou(Rect{2, 2, 6, 6}), 1.0);
  // [0,4)x[0,4): intersection [2,4)x[2,4) = 4 px, union 16 + 16 - 4 = 28.
  EXPECT_DOUBLE_EQ(m.iou(Rect{0, 0, 4, 4}), 4.0 / 28.0);
  EXPECT_DOUBLE_EQ(m.iou(Rect{6, 6, 10, 10}), 0.0);
  // The whole image: 16 / 100.
  EXPECT_DOUBLE_EQ(m.iou(Rect{0, 0, 10, 10}), 0.16);
  const Rect bb = m.bounding_box();
  EXPECT_EQ(std::make_tuple(bb.y0, bb.x0, bb.y1, bb.x1), std::make_tuple(int64_t{2}, int64_t{2}, int64_t{6}, int64_t{6}));
}

TEST(TrainingMasks, AcceptanceRuleAndGammaDistribution) {
  // A centred disc of radius 20 in a 64x64 image.
  auto yy = torch::arange(64).view({64, 1}).to(torch::kFloat32) - 31.5;
  auto xx = torch::arange(64).view({1, 64}).to(torch::kFloat32) - 31.5;
  const MaskIntegral m((yy * yy + xx * xx) < 400);
  std::mt19937_64 rng(42);
  std::map<double, int> count;
  for (int i = 0; i < 3000; ++i) {
    const TrainingMask t = sample_training_mask(m, rng);
    ASSERT_FALSE(t.fallback) << "a disc always admits a rectangle with IoU > 0.5";
    EXPECT_GT(t.iou, t.gamma);                      // the paper's rule, strictly greater
    EXPECT_DOUBLE_EQ(t.iou, m.iou(t.rect));          // the reported IoU is the rectangle's
    EXPECT_GE(t.rect.y1 - t.rect.y0, 6);             // sides within [0.1, 0.9] x 64
    EXPECT_LE(t.rect.x1 - t.rect.x0, 57);
    ++count[t.gamma];
  }
  ASSERT_EQ(count.size(), 3u);
  for (const auto& [gamma, n] : count) {
    // Equal probability: 1000 expected each; 5 standard deviations = 5 * sqrt(3000 * 1/3 * 2/3) ~ 129.
    EXPECT_NEAR(n, 1000, 129) << "gamma " << gamma;
  }
}

TEST(TrainingMasks, FallsBackToBoundingBoxWhenNoRectanglePasses) {
  // A checkerboard: any rectangle of >= 2 px holds at most ~half foreground, so IoU <= ~0.5 always fails γ = 0.5.
  torch::Tensor fg = ((torch::arange(32).view({32, 1}) + torch::arange(32).view({1, 32})) % 2 == 0).to(torch::kFloat32);
  const MaskIntegral m(fg);
  std::mt19937_64 rng(1);
  TrainingMaskOptions o;
  o.gammas = {0.5};
  o.max_tries = 50;
  const TrainingMask t = sample_training_mask(m, rng, o);
  EXPECT_TRUE(t.fallback);
  EXPECT_EQ(t.tries, 50);
  EXPECT_EQ(t.rect.area(), 32 * 32);  // the checkerboard's bounding box is the image
  const torch::Tensor r = rect_mask(Rect{1, 2, 3, 5}, 4, 6);
  EXPECT_EQ(r.sum().item<float>(), 6.0f);
  EXPECT_EQ(r[0][1][2].item<float>(), 1.0f);
  EXPECT_EQ(r[0][0][2].item<float>(), 0.0f);
}
