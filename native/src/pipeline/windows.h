// Inpainting windows (multi-resolution scoring): each mask is inpainted inside a square window around it,
// resampled to the model's inpainting resolution, and the result is pasted back inside the mask only.
//
//   bbox(m)        the mask's bounding box, side s = max(height, width) in analysis pixels
//   window side    S = max(ceil(s · (1 + 2c)), min_window_side(P)) rounded up to a multiple of 16,  c = the context
//                  margin per side
//   position       centred on the box, then shifted to lie inside the image; S >= min(H, W): the whole image
//   crop           x_w = x[window], m_w = m[window], resampled to P x P (the inpainting resolution)
//   paste          x̂ = where(m_w, Resample_S(inpaint(x_w, m_w)), x_w)   (outside the mask: x, bit for bit)
//
// With `full` context (c < 0, the paper's behaviour) every window is the whole image and nothing is pasted:
// x̂ is the model's output resampled to the image size, as in eq. 16-17 of the paper.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "pipeline/inpaint.h"
#include "pipeline/training_masks.h"

namespace asd {
class Lpips;
}

namespace asd::pipeline {

/// A rectangle of the image: rows [y0, y0 + height), columns [x0, x0 + width).
struct Window {
  int64_t y0 = 0, x0 = 0, height = 0, width = 0;
  bool operator==(const Window& o) const { return y0 == o.y0 && x0 == o.x0 && height == o.height && width == o.width; }
  bool operator!=(const Window& o) const { return !(*this == o); }
};

struct WindowOptions {
  /// Context margin on each side of the mask's bounding box, as a fraction of the box side (>= 0); negative
  /// means `full`: the whole image, no paste-back (the paper's behaviour).
  double context = -1.0;
  /// Side P of the square the model inpaints at (a multiple of the VAE factor); 0 = the image's own size
  /// (only with full context: the image is then inpainted as it is).
  int64_t inpaint_size = 0;
  /// Where D (eq. 16-17) of a window is computed: false = at the analysis resolution (the window's own size, on the pasted
  /// image resampled back); true = at the inpainting resolution (the window's crop resampled to P against the model's output
  /// pasted at P), then D is resampled to the window. The second compares images of the same bandwidth: a window shrunk to
  /// P cannot come back sharper than P, and at the analysis size D would measure that lost detail everywhere.
  bool distance_at_inpaint_size = false;
  bool full() const { return context < 0; }
};

/// Window sides are rounded up to a multiple of this: the ResNet18 of the perceptual distance (onnx_export padding) needs
/// multiples of 16 up to layer3.
constexpr int64_t kWindowMultiple = 16;

/// The smallest window side for inpainting resolution P: max(64, P / 4) pixels. Windows are never upsampled by
/// more than 4x, and the perceptual distance always sees at least 64 x 64 pixels (AlexNet needs 63).
int64_t min_window_side(int64_t inpaint_size);

/// Bounding box of the pixels > 0.5 of `mask` ([H, W] or [1, H, W]); an empty mask gives the whole image.
Rect mask_bounding_box(const torch::Tensor& mask);

/// The window of a mask with bounding box `box` in an H x W image (see the file comment). Full context, or a
/// window side >= min(H, W), gives the whole image. ASD_ERR_INVALID_ARGUMENT for an empty or out-of-image box.
Window window_for(const Rect& box, int64_t height, int64_t width, const WindowOptions& options);

/// Indices of `windows` grouped by window size (height, width): groups ordered by size, indices in input order. Windows of
/// one size are resampled, pasted and scored in the same batches.
std::vector<std::vector<int64_t>> group_by_size(const std::vector<Window>& windows);

/// x[:, :, window] for x [N, C, H, W] (a view).
torch::Tensor crop(const torch::Tensor& x, const Window& w);

/// Resamples images [N, C, h, w] to [N, C, height, width]: bilinear (align_corners = false), antialiased when
/// shrinking; returns `x` itself when the size already matches.
torch::Tensor resample_image(const torch::Tensor& x, int64_t height, int64_t width);

/// Resamples binary masks [N, 1, h, w] (1 = inpaint) to [N, 1, height, width] so that every target pixel that
/// any masked source pixel touches is masked: adaptive max pooling when either side shrinks, nearest when both grow.
torch::Tensor resample_mask(const torch::Tensor& m, int64_t height, int64_t width);

/// Result of inpaint_windows. Tensors are float32 on the CPU.
struct WindowedInpainting {
  std::vector<Window> windows;  ///< one per mask
  torch::Tensor images;         ///< [M, 3, H, W] in [-1, 1]: x with window i's inpainting pasted (undefined unless asked)
  torch::Tensor distances;      ///< [M, H, W]: D(x_w, x̂_w) (eq. 16-17) inside window i, 0 outside (undefined without a distance)
};

/// How the masks are inpainted: the batched loop with a shared prompt embedding, or the naive baseline that
/// re-encodes the prompts (token_ids [P, L]) for every mask.
struct InpaintCondition {
  torch::Tensor text_embedding;  ///< [1, L, D]
  torch::Tensor token_ids;       ///< [P, L] int64, for naive
  bool naive = false;
};

/// Inpaints `image` [3, H, W] (in [-1, 1]) under `masks` [M, 1, H, W] (values > 0.5 = inpaint) window by window:
/// all windows, resampled to P, go through one batched denoising loop (identical windows share E(x_w)); results
/// are resampled back, pasted inside their masks, and (if `distance` is given) D is computed per window in batches
/// of windows of the same size. `want_images`: also return the pasted images.
/// ASD_ERR_INVALID_ARGUMENT for wrong shapes, an inpaint_size that is not a multiple of the VAE factor, or
/// inpaint_size 0 with windows.
WindowedInpainting inpaint_windows(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const WindowOptions& windows,
                                   const InpaintCondition& condition, const InpaintOptions& options, const Lpips* distance, bool want_images,
                                   const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace asd::pipeline
