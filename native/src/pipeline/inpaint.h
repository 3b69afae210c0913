// Batched inpainting of one image under many masks (paper section 4.2, eq. 11), with the whole denoising
// loop in native code.
//
// For an image x, masks m_1..m_M and the category's prompt embedding c:
//   z   = s * mean(E(x))                              once per image (s = the VAE scaling_factor)
//   z°_i = s * mean(E((1 - m_i) ⊙ x)),  m̃_i = nearest-downsample(m_i) to the latent size
//   timesteps = DDIM(num_inference_steps)[t_start:]   (strength rule, t_start = N - min(int(N·λ), N))
//   z_T̃,i = add_noise(z, ε_i, timesteps[0]),          ε_i ~ N(0, I) from a generator seeded (seed, i)
//                                                     (λ = 1: z_T̃,i = ε_i, pure noise, as diffusers' is_strength_max)
//   for t in timesteps: z_i = DDIM.step(UNet([z_i; z°_i; m̃_i], t, c), t, z_i)
//   x̂_i = clamp(D(z_i / s), -1, 1)
// The posterior MEAN is used for E(·) (no sampling): inpaintings depend only on the seeded ε_i, and a
// reconstruction-based score is not perturbed by VAE sampling noise.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "pipeline/sd_pipeline.h"

namespace asd::pipeline {

struct InpaintOptions {
  /// DDIM steps of the full schedule (the paper: 50), >= 1.
  int64_t num_inference_steps = 50;
  /// λ in [0, 1]: the fraction of the schedule that is re-noised and denoised (the paper: 0.4).
  double noise_strength = 0.4;
  /// Masks per UNet batch; 0 chooses from the memory available (see choose_batch_size).
  int64_t batch_size = 0;
  /// Seeds the per-mask noise: mask i of a call uses a CPU generator seeded with seed + i, so results do not
  /// depend on the batch size or on the device's generator.
  uint64_t seed = 0;
};

/// Peak-memory estimate (bytes) of one mask in the batched loop, from the UNet and VAE configs and the
/// latent size h x w (activations of one UNet forward, with the attention score matrices under the manual attention
/// kernel only (models/attention.h), + the VAE encode/decode of one image). Documented as an
/// estimate: the loop also halves the batch and retries if the device reports out-of-memory.
int64_t estimate_bytes_per_mask(const SdComponents& c, int64_t height, int64_t width);

/// CPU batch rule (see choose_batch_size): the batch's largest UNet feature map (block_out_channels[0] x h x w
/// per mask) stays within this many bytes, about a core's L2 cache. Measured on the 2-core CI machine (compact,
/// 86 masks, ms per image): 64x64 (16x16 latents) batch 4 14,050, 16 11,792, 24 9,981, 32 9,088, 43 9,012,
/// 64 10,299, 86 11,709; 128x128: batch 4 40,021, 8 44,719, 16 50,540, 86 60,438. This rule picks 32 and 8.
constexpr int64_t kCpuBatchFeatureBytes = int64_t{2} << 20;

/// The batch size used when InpaintOptions::batch_size is 0: half of the memory available on the device
/// (CUDA: cudaMemGetInfo's free memory; CPU: MemAvailable of /proc/meminfo) divided by
/// estimate_bytes_per_mask, clamped to [1, num_masks]; on the CPU also at most
/// kCpuBatchFeatureBytes / (block_out_channels[0] x h x w x element size), at least 1.
int64_t choose_batch_size(const SdComponents& c, int64_t height, int64_t width, int64_t num_masks);

/// The prompt condition of a category (section 4.2, "Aggregation of Hierarchical Prompts"): the mean over
/// prompts of the text encoder's last hidden state. token_ids [P, 77] int64 -> [1, 77, D] in the model dtype.
torch::Tensor average_prompt_embedding(SdComponents& c, const torch::Tensor& token_ids);

/// Batched inpainting: image [3, H, W] in [-1, 1]; masks [M, 1, H, W] with 1 = inpaint (values > 0.5);
/// text_embedding [1, L, D] (average_prompt_embedding). H and W must be multiples of vae_scale_factor().
/// Returns [M, 3, H, W] in [-1, 1] on the CPU (float32). E(x) and the condition are computed once; the loop
/// never leaves native code. `progress(done, total)` (optional) is called after each batch.
/// ASD_ERR_INVALID_ARGUMENT for wrong shapes or options.
torch::Tensor inpaint(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const torch::Tensor& text_embedding,
                      const InpaintOptions& options, const std::function<void(int64_t, int64_t)>& progress = {});

/// The same loop over window crops (multi-resolution scoring, pipeline/windows.h): crops [U, 3, H, W] in [-1, 1];
/// mask i ([M, 1, H, W]) applies to crop crop_of_mask[i] (in [0, U)). E(crop) is computed once per distinct crop
/// that the masks use. With one crop this is exactly `inpaint` (which calls it).
/// Errors as `inpaint`, plus ASD_ERR_INVALID_ARGUMENT for a crop index out of range, and for options that leave
/// zero denoising steps (int(num_inference_steps · noise_strength) < 1), with the minimum λ in the message.
torch::Tensor inpaint_crops(SdComponents& c, const torch::Tensor& crops, const std::vector<int64_t>& crop_of_mask, const torch::Tensor& masks,
                            const torch::Tensor& text_embedding, const InpaintOptions& options,
                            const std::function<void(int64_t, int64_t)>& progress = {});

/// The same result computed as a direct port would: one mask at a time, recomputing E(x) and the prompt
/// embedding (from token_ids [P, 77]) for every mask and concatenating the UNet input with torch::cat each
/// step. For the benchmark's `naive` mode and as a reference in tests.
torch::Tensor inpaint_naive(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const torch::Tensor& token_ids,
                            const InpaintOptions& options);
/// inpaint_naive over window crops (as inpaint_crops).
torch::Tensor inpaint_naive_crops(SdComponents& c, const torch::Tensor& crops, const std::vector<int64_t>& crop_of_mask, const torch::Tensor& masks,
                                  const torch::Tensor& token_ids, const InpaintOptions& options);

}  // namespace asd::pipeline
