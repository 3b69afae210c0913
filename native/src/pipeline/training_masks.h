// Training masks of fine-tuning (paper section 4.1, "Training Mask Design"): a random rectangle m_r is kept
// only if IoU(m_r, m_f) > γ, with γ drawn from {0, 0.2, 0.5} with equal probability (section 5.1) and m_f the
// image's foreground mask.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include <torch/torch.h>

namespace asd::pipeline {

/// A rectangle [y0, y1) x [x0, x1) in pixels.
struct Rect {
  int64_t y0 = 0, x0 = 0, y1 = 0, x1 = 0;
  int64_t area() const { return (y1 - y0) * (x1 - x0); }
};

/// Summed-area table of a binary mask, for O(1) rectangle sums: IoU of any rectangle with the mask.
class MaskIntegral {
 public:
  /// foreground: [H, W] (or [1, H, W]) with values in {0, 1} (anything > 0.5 counts as foreground).
  explicit MaskIntegral(const torch::Tensor& foreground);
  int64_t height() const { return h_; }
  int64_t width() const { return w_; }
  int64_t total() const { return sum(Rect{0, 0, h_, w_}); }
  /// Foreground pixels inside r.
  int64_t sum(const Rect& r) const;
  /// |r ∩ m_f| / |r ∪ m_f| (0 when both are empty).
  double iou(const Rect& r) const;
  /// Bounding box of the foreground (the whole image if there is none).
  Rect bounding_box() const;

 private:
  int64_t h_, w_;
  std::vector<int64_t> table_;  // (h+1) x (w+1)
};

struct TrainingMask {
  Rect rect;
  double gamma = 0;     ///< the threshold drawn for this mask
  double iou = 0;       ///< IoU(m_r, m_f) of the returned rectangle
  int tries = 0;        ///< rectangles drawn
  bool fallback = false;  ///< no rectangle passed within max_tries: the foreground's bounding box was used
};

struct TrainingMaskOptions {
  std::vector<double> gammas = {0.0, 0.2, 0.5};  ///< γ candidates, drawn with equal probability
  double min_side = 0.1;  ///< rectangle sides are uniform in [min_side, max_side] x the image side
  double max_side = 0.9;
  int max_tries = 200;
};

/// Draws γ, then rectangles (sides uniform in [min_side, max_side] of the image, position uniform) until
/// IoU(m_r, m_f) > γ. If none passes in max_tries draws, returns the foreground's bounding box (flagged as
/// fallback: a sparse foreground, e.g. thin structures, may have no rectangle with IoU > γ).
TrainingMask sample_training_mask(const MaskIntegral& foreground, std::mt19937_64& rng, const TrainingMaskOptions& options = {});

/// The rectangle as a float mask [1, H, W] (1 inside).
torch::Tensor rect_mask(const Rect& r, int64_t height, int64_t width);

}  // namespace asd::pipeline
