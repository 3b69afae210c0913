// The inpainting UNet's input assembly, eq. 11 of the paper: z̃_t = [z_t; z°; m̃] along channels.
//
// In the fused denoising loop z° (the masked image's latents) and m̃ (the latent-size mask) are fixed per mask
// while z_t changes every step, so the op writes into a preallocated buffer and can skip the fixed part.
#pragma once

#include <torch/torch.h>

namespace asd::kernels {

/// out[:, 0:C] = z_t, out[:, C:2C] = masked_latents, out[:, 2C] = mask.
///   z_t             [B, C, h, w]
///   masked_latents  [B, C, h, w] or [1, C, h, w] (broadcast over the batch)
///   mask            [B, 1, h, w] or [1, 1, h, w], values in [0, 1]
///   out             [B, 2C+1, h, w], same dtype/device as z_t (allocated when undefined)
/// With `latents_only` the fixed channels of `out` are assumed already filled and only z_t is written.
/// One CUDA kernel launch on CUDA tensors (built with ANOMALYSD_CUDA), copies into `out` on the CPU.
/// Throws asd::Error(ASD_ERR_INVALID_ARGUMENT) on shape, dtype or device mismatch.
torch::Tensor mask_concat(const torch::Tensor& z_t, const torch::Tensor& masked_latents, const torch::Tensor& mask,
                          torch::Tensor out = {}, bool latents_only = false);

#ifdef ANOMALYSD_WITH_CUDA
/// CUDA implementation (mask_concat.cu); arguments already validated, all contiguous on one device.
void mask_concat_cuda(const torch::Tensor& z_t, const torch::Tensor& masked_latents, const torch::Tensor& mask,
                      torch::Tensor& out, bool latents_only);
#endif

}  // namespace asd::kernels
