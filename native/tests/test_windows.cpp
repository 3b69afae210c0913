// Inpainting windows of multi-resolution scoring (pipeline/windows.h): geometry, resampling, paste-back, and the
// full-context path that must reproduce the whole-image pipeline.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "models/lpips.h"
#include "pipeline/inpaint.h"
#include "pipeline/sd_pipeline.h"
#include "pipeline/windows.h"
#include "test_util.h"

using namespace asd::pipeline;

namespace {

WindowOptions context(double c, int64_t p = 64) {
  WindowOptions o;
  o.context = c;
  o.inpaint_size = p;
  return o;
}

/// The offline distance on a seeded random ResNet18 in eval mode (BatchNorm with running statistics).
asd::Lpips random_distance() {
  asd::ResNet18 net(asd::ResNetPadding::onnx_export, asd::ImagePreprocess::onnx_resnet18());
  net->init_random(5);
  net->eval();
  return asd::Lpips::resnet18_uniform(net);
}

void expect_window(const Window& w, int64_t y0, int64_t x0, int64_t h, int64_t wd) {
  EXPECT_EQ(w.y0, y0);
  EXPECT_EQ(w.x0, x0);
  EXPECT_EQ(w.height, h);
  EXPECT_EQ(w.width, wd);
}

}  // namespace

TEST(Windows, GeometryCentredGrownAndRounded) {
  // A 40 x 30 box in the middle of 256 x 256, context 0.5: side ceil(40 · 2) = 80, a multiple of 16; centred on the box
  // (rows 100..140 -> centre 120, columns 110..140 -> centre 125): top floor((100 + 140 - 80) / 2) = 80, left 85.
  expect_window(window_for(Rect{100, 110, 140, 140}, 256, 256, context(0.5)), 80, 85, 80, 80);
  // Context 1.0: ceil(40 · 3) = 120 -> 128 (multiple of 16); top floor((240 - 128) / 2) = 56, left floor((250 - 128) / 2) = 61.
  expect_window(window_for(Rect{100, 110, 140, 140}, 256, 256, context(1.0)), 56, 61, 128, 128);
  // A small box: the minimum side max(64, P / 4) wins (P = 64 -> 64; P = 512 -> 128).
  expect_window(window_for(Rect{120, 120, 130, 130}, 256, 256, context(0.5)), 93, 93, 64, 64);
  expect_window(window_for(Rect{120, 120, 130, 130}, 256, 256, context(0.5, 512)), 61, 61, 128, 128);
  EXPECT_EQ(min_window_side(64), 64);
  EXPECT_EQ(min_window_side(512), 128);
}

TEST(Windows, BordersCornersAndTheWholeImage) {
  // Corners: the window is shifted to stay inside the image, and still contains the box.
  expect_window(window_for(Rect{0, 0, 10, 10}, 256, 256, context(0.5)), 0, 0, 64, 64);
  expect_window(window_for(Rect{246, 246, 256, 256}, 256, 256, context(0.5)), 192, 192, 64, 64);
  expect_window(window_for(Rect{0, 240, 32, 256}, 256, 256, context(0.5)), 0, 192, 64, 64);
  // The grid of the paper at 256 px: an 8 x 8 cell (32 px) -> 64, a 4 x 4 cell (64 px) -> 128, a 2 x 2 cell -> the image.
  expect_window(window_for(Rect{224, 0, 256, 32}, 256, 256, context(0.5)), 192, 0, 64, 64);
  expect_window(window_for(Rect{64, 64, 128, 128}, 256, 256, context(0.5)), 32, 32, 128, 128);
  expect_window(window_for(Rect{0, 0, 128, 128}, 256, 256, context(0.5)), 0, 0, 256, 256);
  // Full context is the whole image whatever the box; so is any window at least as large as the shorter side.
  expect_window(window_for(Rect{120, 120, 130, 130}, 256, 256, context(-1)), 0, 0, 256, 256);
  expect_window(window_for(Rect{0, 0, 90, 10}, 96, 300, context(0.0)), 0, 0, 96, 300);  // 90 -> 96 >= min(96, 300)
  EXPECT_THROW(window_for(Rect{10, 10, 10, 20}, 256, 256, context(0.5)), asd::Error);  // empty box
  EXPECT_THROW(window_for(Rect{0, 0, 300, 20}, 256, 256, context(0.5)), asd::Error);   // outside
}

TEST(Windows, PrototypeMaskBoundingBoxCoversEveryBlob) {
  // M^(p) (eq. 15) can be several blobs: its window is built around the box of all of them.
  torch::Tensor m = torch::zeros({1, 256, 256});
  m[0].narrow(0, 40, 10).narrow(1, 30, 12).fill_(1);
  m[0].narrow(0, 90, 6).narrow(1, 100, 4).fill_(1);
  const Rect box = mask_bounding_box(m);
  EXPECT_EQ(box.y0, 40);
  EXPECT_EQ(box.x0, 30);
  EXPECT_EQ(box.y1, 96);
  EXPECT_EQ(box.x1, 104);
  // side max(56, 74) = 74 -> ceil(74 · 2) = 148 -> 160; centre rows 68, columns 67.
  expect_window(window_for(box, 256, 256, context(0.5)), 0, 0, 160, 160);
  const Rect empty = mask_bounding_box(torch::zeros({256, 256}));
  EXPECT_EQ(empty.area(), 256 * 256);
}

TEST(Windows, SameSizeGrouping) {
  const std::vector<Window> w = {{0, 0, 64, 64}, {0, 0, 256, 256}, {64, 64, 64, 64}, {0, 0, 128, 128}, {192, 0, 64, 64}, {0, 0, 256, 256}};
  const auto groups = group_by_size(w);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0], (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(groups[1], (std::vector<int64_t>{3}));
  EXPECT_EQ(groups[2], (std::vector<int64_t>{1, 5}));
}

TEST(Windows, ResampleMaskKeepsEveryTouchedPixel) {
  // Shrinking 8 -> 4: one masked source pixel marks its 2 x 2 target cell; growing 2 -> 4 repeats pixels.
  torch::Tensor m = torch::zeros({1, 1, 8, 8});
  m[0][0][5][2] = 1;
  const torch::Tensor s = resample_mask(m, 4, 4);
  EXPECT_EQ(s.sum().item<float>(), 1.0f);
  EXPECT_EQ(s[0][0][2][1].item<float>(), 1.0f);
  torch::Tensor g = torch::zeros({1, 1, 2, 2});
  g[0][0][1][0] = 1;
  EXPECT_EQ(resample_mask(g, 4, 4).sum().item<float>(), 4.0f);
  // Mixed: 8 rows shrink to 2 while 2 columns grow to 4. A masked pixel in row 1 (between the nearest samples at rows 0
  // and 4) must survive: nearest would drop it, pooling keeps it in target row 0, both target columns of its column.
  torch::Tensor mixed = torch::zeros({1, 1, 8, 2});
  mixed[0][0][1][1] = 1;
  const torch::Tensor r = resample_mask(mixed, 2, 4);
  EXPECT_EQ(r.sum().item<float>(), 2.0f);
  EXPECT_EQ(r[0][0][0][2].item<float>(), 1.0f);
  EXPECT_EQ(r[0][0][0][3].item<float>(), 1.0f);
  const torch::Tensor x = torch::rand({2, 3, 8, 8});
  EXPECT_TRUE(resample_image(x, 8, 8).is_same(x));  // the same size is not resampled at all
  EXPECT_EQ(resample_image(x, 4, 4).sizes(), torch::IntArrayRef({2, 3, 4, 4}));
}

namespace {

struct WindowFixture {
  SdComponents c = compact_preset(11);
  torch::Tensor image = torch::rand({3, 128, 128}) * 2 - 1;
  torch::Tensor masks = torch::zeros({4, 1, 128, 128});
  torch::Tensor tokens = torch::randint(0, 49408, {2, 77}, torch::kInt64);
  InpaintCondition condition;
  InpaintOptions options;
  WindowFixture() {
    masks[0].narrow(1, 0, 16).narrow(2, 0, 16).fill_(1);    // a corner cell
    masks[1].narrow(1, 50, 20).narrow(2, 70, 10).fill_(1);  // inside
    masks[2].fill_(1);                                      // the whole image
    masks[3].narrow(1, 100, 3).narrow(2, 5, 3).fill_(1);    // a tiny blob
    condition.text_embedding = average_prompt_embedding(c, tokens);
    condition.token_ids = tokens;
    options.num_inference_steps = 10;
    options.seed = 3;
  }
};

}  // namespace

TEST(Windows, PasteBackLeavesPixelsOutsideTheMaskIdentical) {
  WindowFixture f;
  const WindowedInpainting out = inpaint_windows(f.c, f.image, f.masks, context(0.5, 32), f.condition, f.options, nullptr, true);
  ASSERT_EQ(out.images.sizes(), torch::IntArrayRef({4, 3, 128, 128}));
  for (int64_t i = 0; i < 4; ++i) {
    const torch::Tensor outside = (f.masks[i] < 0.5).expand({3, 128, 128});
    EXPECT_TRUE(torch::equal(out.images[i].masked_select(outside), f.image.masked_select(outside))) << "mask " << i;
    const torch::Tensor inside = (f.masks[i] > 0.5).expand({3, 128, 128});
    EXPECT_GT((out.images[i].masked_select(inside) - f.image.masked_select(inside)).abs().max().item<float>(), 1e-3) << "mask " << i;
  }
  // Windows: the corner cell 16 px -> 32 -> the 64 px minimum at the corner; the whole-image mask -> the image.
  expect_window(out.windows[0], 0, 0, 64, 64);
  expect_window(out.windows[2], 0, 0, 128, 128);
  // Deterministic for a seed.
  const WindowedInpainting again = inpaint_windows(f.c, f.image, f.masks, context(0.5, 32), f.condition, f.options, nullptr, true);
  EXPECT_TRUE(torch::equal(out.images, again.images));
}

TEST(Windows, FullContextAtTheInpaintingSizeIsTheWholeImagePipeline) {
  // context full + inpaint_size = image size: no crop, no resampling, no paste. The inpaintings are exactly inpaint()'s, and
  // the distances D(x, x̂_i) equal the whole-image distances within 1e-6 (the distance batches differ in size).
  WindowFixture f;
  const asd::Lpips distance = random_distance();
  const WindowedInpainting out = inpaint_windows(f.c, f.image, f.masks, context(-1, 128), f.condition, f.options, &distance, true);
  const torch::Tensor reference = inpaint(f.c, f.image, f.masks, f.condition.text_embedding, f.options);
  EXPECT_TRUE(torch::equal(out.images, reference));
  torch::NoGradGuard ng;
  const torch::Tensor d = distance.distance_map(f.image.unsqueeze(0).expand({4, 3, 128, 128}), reference).squeeze(1);
  EXPECT_LT(asd::test::max_abs_error(out.distances, d), 1e-6);
  EXPECT_GT(out.distances.max().item<float>(), 0.0f);
  // inpaint_size 0 means the image's size; windows need a size.
  const WindowedInpainting zero = inpaint_windows(f.c, f.image, f.masks, context(-1, 0), f.condition, f.options, nullptr, true);
  EXPECT_TRUE(torch::equal(zero.images, reference));
  EXPECT_THROW(inpaint_windows(f.c, f.image, f.masks, context(0.5, 0), f.condition, f.options, nullptr, true), asd::Error);
  EXPECT_THROW(inpaint_windows(f.c, f.image, f.masks, context(0.5, 30), f.condition, f.options, nullptr, true), asd::Error);
}

TEST(Windows, DistancesLiveInsideTheWindowsAndNaiveAgrees) {
  WindowFixture f;
  const asd::Lpips distance = random_distance();
  const WindowedInpainting out = inpaint_windows(f.c, f.image, f.masks, context(0.5, 32), f.condition, f.options, &distance, true);
  for (int64_t i = 0; i < 4; ++i) {
    const Window& w = out.windows[static_cast<size_t>(i)];
    torch::Tensor outside = torch::ones({128, 128}, torch::kBool);
    outside.narrow(0, w.y0, w.height).narrow(1, w.x0, w.width).fill_(false);
    EXPECT_EQ(out.distances[i].masked_select(outside).abs().sum().item<float>(), 0.0f) << "mask " << i;
    // D on the window equals the distance of the window crops computed directly.
    torch::NoGradGuard ng;
    const torch::Tensor x_w = crop(f.image.unsqueeze(0), w), y_w = crop(out.images.narrow(0, i, 1), w);
    EXPECT_LT(asd::test::max_abs_error(out.distances[i].narrow(0, w.y0, w.height).narrow(1, w.x0, w.width), distance.distance_map(x_w, y_w)[0][0]),
              1e-5);
  }
  InpaintCondition naive = f.condition;
  naive.naive = true;
  const WindowedInpainting n = inpaint_windows(f.c, f.image, f.masks, context(0.5, 32), naive, f.options, nullptr, true);
  EXPECT_LT(asd::test::max_abs_error(n.images, out.images), 1e-4);
}

TEST(Windows, DistanceAtTheInpaintingSizeComparesLikeWithLike) {
  // P = 64 on a 128 image: the corner cell's window is 64 px = P (no resampling), so both places give the same D there; the
  // whole-image mask's window (128 -> 64) is compared at 64 and D resampled back, which differs from D at 128.
  WindowFixture f;
  const asd::Lpips distance = random_distance();
  WindowOptions at_p = context(0.5, 64);
  at_p.distance_at_inpaint_size = true;
  const WindowedInpainting a = inpaint_windows(f.c, f.image, f.masks, context(0.5, 64), f.condition, f.options, &distance, true);
  const WindowedInpainting b = inpaint_windows(f.c, f.image, f.masks, at_p, f.condition, f.options, &distance, true);
  EXPECT_TRUE(torch::equal(a.images, b.images));  // the inpaintings are the same; only D's resolution differs
  expect_window(a.windows[0], 0, 0, 64, 64);
  EXPECT_LT(asd::test::max_abs_error(a.distances[0], b.distances[0]), 1e-6);
  EXPECT_GT(asd::test::max_abs_error(a.distances[2], b.distances[2]), 1e-4);
  // At P the whole-image window's D is a 64 x 64 map upsampled: smooth at 2-pixel scale.
  EXPECT_EQ(b.distances[2].sizes(), torch::IntArrayRef({128, 128}));
}
