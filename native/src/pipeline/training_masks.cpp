#include "pipeline/training_masks.h"

#include <algorithm>

#include "core/error.h"

namespace asd::pipeline {

MaskIntegral::MaskIntegral(const torch::Tensor& foreground) {
  torch::Tensor m = foreground.dim() == 3 ? foreground.squeeze(0) : foreground;
  require(m.dim() == 2, "MaskIntegral: foreground must be [H, W] or [1, H, W]");
  m = (m.to(torch::kCPU) > 0.5).to(torch::kInt64).contiguous();
  h_ = m.size(0);
  w_ = m.size(1);
  table_.assign(static_cast<size_t>((h_ + 1) * (w_ + 1)), 0);
  const int64_t* p = m.data_ptr<int64_t>();
  for (int64_t y = 0; y < h_; ++y) {
    int64_t row = 0;
    for (int64_t x = 0; x < w_; ++x) {
      row += p[y * w_ + x];
      table_[(y + 1) * (w_ + 1) + x + 1] = table_[y * (w_ + 1) + x + 1] + row;
    }
  }
}

int64_t MaskIntegral::sum(const Rect& r) const {
  const int64_t W = w_ + 1;
  return table_[r.y1 * W + r.x1] - table_[r.y0 * W + r.x1] - table_[r.y1 * W + r.x0] + table_[r.y0 * W + r.x0];
}

double MaskIntegral::iou(const Rect& r) const {
  const int64_t inter = sum(r);
  const int64_t uni = r.area() + total() - inter;
  return uni == 0 ? 0.0 : static_cast<double>(inter) / static_cast<double>(uni);
}

Rect MaskIntegral::bounding_box() const {
  if (total() == 0) return Rect{0, 0, h_, w_};
  Rect r{h_, w_, 0, 0};
  for (int64_t y = 0; y < h_; ++y) {
    if (sum(Rect{y, 0, y + 1, w_}) > 0) {
      r.y0 = std::min(r.y0, y);
      r.y1 = y + 1;
    }
  }
  for (int64_t x = 0; x < w_; ++x) {
    if (sum(Rect{0, x, h_, x + 1}) > 0) {
      r.x0 = std::min(r.x0, x);
      r.x1 = x + 1;
    }
  }
  return r;
}

TrainingMask sample_training_mask(const MaskIntegral& fg, std::mt19937_64& rng, const TrainingMaskOptions& o) {
  require(!o.gammas.empty(), "sample_training_mask: no γ candidates");
  require(o.min_side > 0 && o.min_side <= o.max_side && o.max_side <= 1, "sample_training_mask: need 0 < min_side <= max_side <= 1");
  TrainingMask result;
  result.gamma = o.gammas[std::uniform_int_distribution<size_t>(0, o.gammas.size() - 1)(rng)];
  std::uniform_real_distribution<double> side(o.min_side, o.max_side);
  const int64_t H = fg.height(), W = fg.width();
  for (int tries = 1; tries <= o.max_tries; ++tries) {
    const int64_t rh = std::clamp<int64_t>(static_cast<int64_t>(side(rng) * H), 1, H);
    const int64_t rw = std::clamp<int64_t>(static_cast<int64_t>(side(rng) * W), 1, W);
    const int64_t y0 = std::uniform_int_distribution<int64_t>(0, H - rh)(rng);
    const int64_t x0 = std::uniform_int_distribution<int64_t>(0, W - rw)(rng);
    const Rect r{y0, x0, y0 + rh, x0 + rw};
    const double iou = fg.iou(r);
    if (iou > result.gamma) {
      result.rect = r;
      result.iou = iou;
      result.tries = tries;
      return result;
    }
  }
  result.rect = fg.bounding_box();
  result.iou = fg.iou(result.rect);
  result.tries = o.max_tries;
  result.fallback = true;
  return result;
}

torch::Tensor rect_mask(const Rect& r, int64_t height, int64_t width) {
  torch::Tensor m = torch::zeros({1, height, width});
  m.narrow(1, r.y0, r.y1 - r.y0).narrow(2, r.x0, r.x1 - r.x0).fill_(1.0f);
  return m;
}

}  // namespace asd::pipeline
