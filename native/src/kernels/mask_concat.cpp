#include "kernels/mask_concat.h"

#include "core/error.h"

namespace asd::kernels {

namespace {
std::string sizes(const torch::Tensor& t) {
  std::ostringstream o;
  o << t.sizes();
  return o.str();
}
}  // namespace

torch::Tensor mask_concat(const torch::Tensor& z_t, const torch::Tensor& masked_latents, const torch::Tensor& mask,
                          torch::Tensor out, bool latents_only) {
  // Runs every denoising step: messages are formatted only when a check fails.
  require(z_t.dim() == 4, [&] { return "mask_concat: z_t must be [B, C, h, w], got " + sizes(z_t); });
  const int64_t B = z_t.size(0), C = z_t.size(1), h = z_t.size(2), w = z_t.size(3);
  require(masked_latents.dim() == 4 && (masked_latents.size(0) == B || masked_latents.size(0) == 1) &&
              masked_latents.size(1) == C && masked_latents.size(2) == h && masked_latents.size(3) == w,
          [&] {
            return "mask_concat: masked_latents must be [B or 1, " + std::to_string(C) + ", h, w] like z_t " + sizes(z_t) + ", got " +
                   sizes(masked_latents);
          });
  require(mask.dim() == 4 && (mask.size(0) == B || mask.size(0) == 1) && mask.size(1) == 1 && mask.size(2) == h && mask.size(3) == w,
          [&] { return "mask_concat: mask must be [B or 1, 1, h, w] with h, w of z_t " + sizes(z_t) + ", got " + sizes(mask); });
  require(masked_latents.device() == z_t.device() && mask.device() == z_t.device(), "mask_concat: inputs on different devices");
  if (!out.defined()) {
    require(!latents_only, "mask_concat: latents_only needs a filled output buffer");
    out = torch::empty({B, 2 * C + 1, h, w}, z_t.options());
  }
  require(out.dim() == 4 && out.size(0) == B && out.size(1) == 2 * C + 1 && out.size(2) == h && out.size(3) == w,
          [&] { return "mask_concat: out must be [" + std::to_string(B) + ", " + std::to_string(2 * C + 1) + ", h, w], got " + sizes(out); });
  require(out.device() == z_t.device() && out.scalar_type() == z_t.scalar_type(), "mask_concat: out must match z_t's dtype and device");
  require(out.is_contiguous(), "mask_concat: out must be contiguous");

#ifdef ANOMALYSD_WITH_CUDA
  if (z_t.is_cuda()) {
    const torch::Tensor z = z_t.contiguous();
    const torch::Tensor ml = masked_latents.to(z_t.scalar_type()).contiguous();
    const torch::Tensor m = mask.to(z_t.scalar_type()).contiguous();
    mask_concat_cuda(z, ml, m, out, latents_only);
    return out;
  }
#endif
  torch::NoGradGuard no_grad;
  out.narrow(1, 0, C).copy_(z_t);
  if (!latents_only) {
    out.narrow(1, C, C).copy_(masked_latents.expand({B, C, h, w}));
    out.narrow(1, 2 * C, 1).copy_(mask.expand({B, 1, h, w}));
  }
  return out;
}

}  // namespace asd::kernels
