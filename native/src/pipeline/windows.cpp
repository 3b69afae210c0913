#include "pipeline/windows.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <utility>

#include "core/error.h"
#include "models/lpips.h"

namespace F = torch::nn::functional;

namespace asd::pipeline {

namespace {

/// Pixels of inpainted windows per perceptual-distance batch (16 images of 256 x 256): bounds the trunk's activation
/// memory while small windows still go in large batches.
constexpr int64_t kDistanceBatchPixels = int64_t{16} * 256 * 256;

/// [lo, lo + len) of length `side` centred on [a, b), shifted to lie inside [0, extent).
int64_t place(int64_t a, int64_t b, int64_t side, int64_t extent) {
  // floor((a + b - side) / 2) for possibly negative numerators
  const int64_t twice = a + b - side;
  const int64_t lo = twice >= 0 ? twice / 2 : -((-twice + 1) / 2);
  return std::clamp<int64_t>(lo, 0, extent - side);
}

}  // namespace

int64_t min_window_side(int64_t inpaint_size) { return std::max<int64_t>(64, inpaint_size / 4); }

Rect mask_bounding_box(const torch::Tensor& mask) {
  torch::Tensor m = mask.dim() == 3 ? mask.squeeze(0) : mask;
  require(m.dim() == 2, "mask_bounding_box: mask must be [H, W] or [1, H, W]");
  const int64_t H = m.size(0), W = m.size(1);
  m = m.to(torch::kCPU) > 0.5;
  const torch::Tensor rows = m.any(1).nonzero(), cols = m.any(0).nonzero();
  if (rows.numel() == 0) return Rect{0, 0, H, W};
  return Rect{rows.min().item<int64_t>(), cols.min().item<int64_t>(), rows.max().item<int64_t>() + 1, cols.max().item<int64_t>() + 1};
}

Window window_for(const Rect& box, int64_t height, int64_t width, const WindowOptions& o) {
  require(height > 0 && width > 0, "window_for: the image must not be empty");
  require(box.y0 >= 0 && box.x0 >= 0 && box.y1 <= height && box.x1 <= width && box.y1 > box.y0 && box.x1 > box.x0, [&] {
    std::ostringstream s;
    s << "window_for: box rows [" << box.y0 << ", " << box.y1 << ") x columns [" << box.x0 << ", " << box.x1 << ") is empty or outside the "
      << height << "x" << width << " image";
    return s.str();
  });
  const Window whole{0, 0, height, width};
  if (o.full()) return whole;
  require(std::isfinite(o.context), "window_for: context must be finite");
  const int64_t s = std::max(box.y1 - box.y0, box.x1 - box.x0);
  const double grown = std::ceil(static_cast<double>(s) * (1.0 + 2.0 * o.context) - 1e-9);
  int64_t side = std::max<int64_t>(static_cast<int64_t>(std::min(grown, 1e12)), min_window_side(o.inpaint_size));
  side = (side + kWindowMultiple - 1) / kWindowMultiple * kWindowMultiple;  // the distance backbones' stride
  if (side >= std::min(height, width)) return whole;
  return Window{place(box.y0, box.y1, side, height), place(box.x0, box.x1, side, width), side, side};
}

std::vector<std::vector<int64_t>> group_by_size(const std::vector<Window>& windows) {
  std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> groups;
  for (size_t i = 0; i < windows.size(); ++i) groups[{windows[i].height, windows[i].width}].push_back(static_cast<int64_t>(i));
  std::vector<std::vector<int64_t>> out;
  for (auto& kv : groups) out.push_back(std::move(kv.second));
  return out;
}

torch::Tensor crop(const torch::Tensor& x, const Window& w) {
  require(x.dim() == 4 && w.y0 >= 0 && w.x0 >= 0 && w.y0 + w.height <= x.size(2) && w.x0 + w.width <= x.size(3), "crop: window outside the image");
  return x.narrow(2, w.y0, w.height).narrow(3, w.x0, w.width);
}

torch::Tensor resample_image(const torch::Tensor& x, int64_t height, int64_t width) {
  require(x.dim() == 4, "resample_image: x must be [N, C, H, W]");
  if (x.size(2) == height && x.size(3) == width) return x;
  const bool shrink = height < x.size(2) || width < x.size(3);
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{height, width})
                               .mode(torch::kBilinear)
                               .align_corners(false)
                               .antialias(shrink));
}

torch::Tensor resample_mask(const torch::Tensor& m, int64_t height, int64_t width) {
  require(m.dim() == 4 && m.size(1) == 1, "resample_mask: m must be [N, 1, H, W]");
  if (m.size(2) == height && m.size(3) == width) return m;
  // Any side that shrinks: max pooling keeps every masked pixel (bins also cover a growing side, as nearest would).
  if (height < m.size(2) || width < m.size(3)) return F::adaptive_max_pool2d(m, F::AdaptiveMaxPool2dFuncOptions({height, width}));
  return F::interpolate(m, F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).mode(torch::kNearest));
}

WindowedInpainting inpaint_windows(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const WindowOptions& wo,
                                   const InpaintCondition& condition, const InpaintOptions& o, const Lpips* distance, bool want_images,
                                   const std::function<void(int64_t, int64_t)>& progress) {
  require(image.dim() == 3 && image.size(0) == 3, "inpaint_windows: image must be [3, H, W]");
  require(masks.dim() == 4 && masks.size(0) >= 1 && masks.size(1) == 1 && masks.size(2) == image.size(1) && masks.size(3) == image.size(2),
          [&] {
            std::ostringstream s;
            s << "inpaint_windows: masks must be [M >= 1, 1, H, W] with the image's H and W, got image " << image.sizes() << ", masks " << masks.sizes();
            return s.str();
          });
  require(wo.inpaint_size >= 0, "inpaint_windows: inpaint_size must be >= 0");
  require(wo.full() || wo.inpaint_size > 0, "inpaint_windows: windows (context >= 0) need an inpaint_size > 0");
  const int64_t M = masks.size(0), H = image.size(1), W = image.size(2);
  const int64_t Ph = wo.inpaint_size > 0 ? wo.inpaint_size : H, Pw = wo.inpaint_size > 0 ? wo.inpaint_size : W;
  const int64_t f = c.vae_scale_factor();
  require(Ph % f == 0 && Pw % f == 0, [&] {
    return "inpaint_windows: the inpainting size " + std::to_string(Ph) + "x" + std::to_string(Pw) + " must be a multiple of the VAE factor " +
           std::to_string(f);
  });
  c10::InferenceMode inference;
  const torch::Tensor x = image.to(torch::kCPU, torch::kFloat32).unsqueeze(0);
  const torch::Tensor binary = (masks.to(torch::kCPU, torch::kFloat32) > 0.5).to(torch::kFloat32);

  // 1. One window per mask; identical windows share one crop (and one E(x_w) in the loop).
  WindowedInpainting result;
  std::vector<Window> distinct;
  std::vector<int64_t> crop_of_mask;
  for (int64_t i = 0; i < M; ++i) {
    const Window w = wo.full() ? Window{0, 0, H, W} : window_for(mask_bounding_box(binary[i]), H, W, wo);
    result.windows.push_back(w);
    auto it = std::find(distinct.begin(), distinct.end(), w);
    crop_of_mask.push_back(it - distinct.begin());
    if (it == distinct.end()) distinct.push_back(w);
  }
  std::vector<torch::Tensor> crops, window_masks;
  for (const Window& w : distinct) crops.push_back(resample_image(crop(x, w), Ph, Pw));
  for (int64_t i = 0; i < M; ++i) window_masks.push_back(resample_mask(crop(binary.narrow(0, i, 1), result.windows[i]), Ph, Pw));
  const torch::Tensor crops_p = torch::cat(crops), masks_p = torch::cat(window_masks);

  // 2. All windows through one denoising loop at the inpainting resolution.
  const torch::Tensor inpainted = condition.naive ? inpaint_naive_crops(c, crops_p, crop_of_mask, masks_p, condition.token_ids, o)
                                                  : inpaint_crops(c, crops_p, crop_of_mask, masks_p, condition.text_embedding, o, progress);

  // 3. Back to the image: windows of one size are resampled, pasted and scored together.
  if (want_images) result.images = x.expand({M, 3, H, W}).clone();
  if (distance != nullptr) result.distances = torch::zeros({M, H, W}, torch::kFloat32);
  for (const std::vector<int64_t>& members : group_by_size(result.windows)) {
    const std::pair<int64_t, int64_t> size{result.windows[members.front()].height, result.windows[members.front()].width};
    const size_t per_batch = static_cast<size_t>(std::max<int64_t>(1, kDistanceBatchPixels / (size.first * size.second)));
    for (size_t first = 0; first < members.size(); first += per_batch) {
      const std::vector<int64_t> ids(members.begin() + static_cast<std::ptrdiff_t>(first),
                                     members.begin() + static_cast<std::ptrdiff_t>(std::min(members.size(), first + per_batch)));
      const torch::Tensor up = resample_image(inpainted.index_select(0, torch::tensor(ids, torch::kInt64)), size.first, size.second);
      // The original of each window, once per distinct window (full context: one for the whole batch).
      std::vector<torch::Tensor> originals, inside;
      std::vector<int64_t> original_of, distinct_ids;
      for (int64_t i : ids) {
        const int64_t u = crop_of_mask[static_cast<size_t>(i)];
        auto it = std::find(distinct_ids.begin(), distinct_ids.end(), u);
        original_of.push_back(it - distinct_ids.begin());
        if (it == distinct_ids.end()) {
          distinct_ids.push_back(u);
          originals.push_back(crop(x, distinct[static_cast<size_t>(u)]));
        }
        inside.push_back(crop(binary.narrow(0, i, 1), result.windows[i]));
      }
      const torch::Tensor refs = torch::cat(originals);
      const torch::Tensor x_w = refs.index_select(0, torch::tensor(original_of, torch::kInt64));
      // Outside the mask the original pixels stay, bit for bit (full context: the paper's x̂, nothing pasted).
      const torch::Tensor x_hat = wo.full() ? up : torch::where(torch::cat(inside) > 0.5, up, x_w);
      torch::Tensor d;
      if (distance != nullptr && wo.distance_at_inpaint_size) {
        // D between the crop at P and the model's output pasted at P, resampled to the window afterwards.
        const torch::Tensor id = torch::tensor(ids, torch::kInt64), distinct_p = crops_p.index_select(0, torch::tensor(distinct_ids, torch::kInt64));
        const torch::Tensor out_p = inpainted.index_select(0, id);
        const torch::Tensor x_hat_p =
            wo.full() ? out_p : torch::where(masks_p.index_select(0, id) > 0.5, out_p, distinct_p.index_select(0, torch::tensor(original_of, torch::kInt64)));
        d = resample_image(distance->distance_map(distinct_p, original_of, x_hat_p).to(torch::kCPU, torch::kFloat32), size.first, size.second);
      } else if (distance != nullptr) {
        d = distance->distance_map(refs, original_of, x_hat).to(torch::kCPU, torch::kFloat32);
      }
      for (size_t k = 0; k < ids.size(); ++k) {
        const Window& w = result.windows[ids[k]];
        if (d.defined()) result.distances[ids[k]].narrow(0, w.y0, w.height).narrow(1, w.x0, w.width).copy_(d[static_cast<int64_t>(k)][0]);
        if (want_images) result.images[ids[k]].narrow(1, w.y0, w.height).narrow(2, w.x0, w.width).copy_(x_hat[static_cast<int64_t>(k)]);
      }
    }
  }
  return result;
}

}  // namespace asd::pipeline
