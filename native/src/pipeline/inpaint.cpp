#include "pipeline/inpaint.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include <ATen/CPUGeneratorImpl.h>
#ifdef ANOMALYSD_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

#include "core/error.h"
#include "kernels/mask_concat.h"
#include "models/attention.h"

namespace asd::pipeline {

namespace {

void check_inputs(const SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const InpaintOptions& o) {
  std::ostringstream s;
  s << "image " << image.sizes() << ", masks " << masks.sizes();
  require(image.dim() == 3 && image.size(0) == 3, "inpaint: image must be [3, H, W], got " + s.str());
  require(masks.dim() == 4 && masks.size(1) == 1 && masks.size(2) == image.size(1) && masks.size(3) == image.size(2),
          "inpaint: masks must be [M, 1, H, W] with the image's H and W, got " + s.str());
  const int64_t f = c.vae_scale_factor();
  require(image.size(1) % f == 0 && image.size(2) % f == 0,
          "inpaint: H and W must be multiples of the VAE factor " + std::to_string(f) + ", got " + s.str());
  require(o.num_inference_steps >= 1 && o.num_inference_steps <= c.scheduler.schedule.num_train_timesteps,
          "inpaint: num_inference_steps must be in [1, " + std::to_string(c.scheduler.schedule.num_train_timesteps) + "], got " +
              std::to_string(o.num_inference_steps));
  require(o.noise_strength >= 0.0 && o.noise_strength <= 1.0, "inpaint: noise_strength must be in [0, 1], got " + std::to_string(o.noise_strength));
  require(o.batch_size >= 0, "inpaint: batch_size must be >= 0");
}

/// s * posterior mean of E(x) for x [B, 3, H, W].
torch::Tensor encode_latents(SdComponents& c, const torch::Tensor& x) { return c.vae->encode(x).first * c.scaling_factor; }

torch::Tensor decode_latents(SdComponents& c, const torch::Tensor& z) {
  return c.vae->decode(z / c.scaling_factor).clamp(-1.0, 1.0).to(torch::kCPU, torch::kFloat32);
}

/// ε_i for masks [first, first + count): one CPU generator per mask, seeded seed + i.
torch::Tensor mask_noise(const SdComponents& c, const InpaintOptions& o, int64_t first, int64_t count, int64_t h, int64_t w) {
  std::vector<torch::Tensor> noise;
  noise.reserve(static_cast<size_t>(count));
  for (int64_t i = first; i < first + count; ++i) {
    auto gen = at::detail::createCPUGenerator(o.seed + static_cast<uint64_t>(i));
    noise.push_back(torch::randn({1, c.latent_channels(), h, w}, gen, torch::TensorOptions().dtype(torch::kFloat32)));
  }
  return torch::cat(noise, 0).to(c.device, c.dtype);
}

bool is_oom(const c10::Error& e) {
  const std::string m = e.what_without_backtrace();
  return m.find("out of memory") != std::string::npos || m.find("can't allocate memory") != std::string::npos;
}

int64_t available_bytes(const torch::Device& device) {
#ifdef ANOMALYSD_WITH_CUDA
  if (device.is_cuda()) {
    size_t free_bytes = 0, total_bytes = 0;
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device.index() < 0 ? 0 : device.index());
    const bool ok = cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess;
    cudaSetDevice(previous);
    if (ok) return static_cast<int64_t>(free_bytes);
  }
#endif
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return int64_t{4} << 30;  // unknown platform: assume 4 GiB
}

}  // namespace

int64_t estimate_bytes_per_mask(const SdComponents& c, int64_t height, int64_t width) {
  const auto& u = c.unet->config();
  const int64_t elem = c10::elementSize(c.dtype);
  int64_t h = height / c.vae_scale_factor(), w = width / c.vae_scale_factor();
  const bool manual_attention = models::attention_kernel() == models::AttentionKernel::kManual;
  int64_t bytes = 0;
  for (size_t level = 0; level < u.block_out_channels.size(); ++level) {
    const int64_t hw = h * w;
    // ~24 live feature maps per level (resnets, norms, skips, up path) + the self-attention score and probability
    // matrices, which only the manual attention kernel holds whole (the fused one works in blocks).
    bytes += 24 * u.block_out_channels[level] * hw * elem;
    if (manual_attention && u.down_block_types[level].rfind("CrossAttn", 0) == 0) bytes += 2 * u.num_attention_heads[level] * hw * hw * elem;
    h = (h + 1) / 2;
    w = (w + 1) / 2;
  }
  // VAE encode of the masked image (largest level at full resolution, ~8 live maps).
  bytes += 8 * c.vae->config().block_out_channels.front() * height * width * elem;
  return bytes;
}

int64_t choose_batch_size(const SdComponents& c, int64_t height, int64_t width, int64_t num_masks) {
  const int64_t per_mask = std::max<int64_t>(1, estimate_bytes_per_mask(c, height, width));
  int64_t batch = std::clamp<int64_t>(available_bytes(c.device) / 2 / per_mask, 1, std::max<int64_t>(1, num_masks));
  if (!c.device.is_cuda()) {
    // On the CPU, per-mask UNet throughput rises with the batch while the feature maps stay cache-resident and
    // falls beyond (see kCpuBatchFeatureBytes); large batches pay off on GPUs only.
    const int64_t map_bytes = c.unet->config().block_out_channels.front() * (height / c.vae_scale_factor()) *
                              (width / c.vae_scale_factor()) * static_cast<int64_t>(c10::elementSize(c.dtype));
    batch = std::min<int64_t>(batch, std::max<int64_t>(1, kCpuBatchFeatureBytes / std::max<int64_t>(1, map_bytes)));
  }
  return batch;
}

torch::Tensor average_prompt_embedding(SdComponents& c, const torch::Tensor& token_ids) {
  require(token_ids.dim() == 2 && token_ids.size(0) >= 1 && token_ids.scalar_type() == torch::kInt64,
          "average_prompt_embedding: token_ids must be int64 [P, L] with P >= 1");
  torch::NoGradGuard no_grad;
  return c.text_encoder->forward(token_ids.to(c.device)).mean(0, /*keepdim=*/true);
}

namespace {

/// Checks crops [U, 3, H, W], crop_of_mask (M entries in [0, U)) and masks [M, 1, H, W] against each other.
void check_crops(const SdComponents& c, const torch::Tensor& crops, const std::vector<int64_t>& crop_of_mask, const torch::Tensor& masks,
                 const InpaintOptions& o) {
  require(crops.dim() == 4 && crops.size(0) >= 1, [&] {
    std::ostringstream s;
    s << "inpaint: crops must be [U >= 1, 3, H, W], got " << crops.sizes();
    return s.str();
  });
  check_inputs(c, crops[0], masks, o);
  require(static_cast<int64_t>(crop_of_mask.size()) == masks.size(0), "inpaint: one crop index per mask is needed");
  for (int64_t u : crop_of_mask) require(u >= 0 && u < crops.size(0), "inpaint: a crop index is out of range");
}

/// The denoising timesteps of λ (diffusers' strength rule). Zero steps is an error: every "inpainting" would be the
/// autoencoder's reconstruction while the caller believes it asked for λ (diffusers refuses this too).
std::vector<int64_t> denoising_steps(schedulers::DDIMScheduler& scheduler, const InpaintOptions& o) {
  const torch::Tensor timesteps = schedulers::timesteps_for_strength(scheduler.set_timesteps(o.num_inference_steps), o.noise_strength);
  if (timesteps.numel() == 0) {
    std::ostringstream s;
    s << "noise_strength " << o.noise_strength << " of num_inference_steps " << o.num_inference_steps
      << " leaves 0 denoising steps (int(steps x strength) must be >= 1): use noise_strength >= " << 1.0 / static_cast<double>(o.num_inference_steps)
      << " or more steps";
    throw_error(ASD_ERR_INVALID_ARGUMENT, s.str());
  }
  return std::vector<int64_t>(timesteps.data_ptr<int64_t>(), timesteps.data_ptr<int64_t>() + timesteps.numel());
}

/// z_T̃ of eq. 11: add_noise(z, ε, t_start), or pure noise ε · init_noise_sigma (= 1 for DDIM) when λ = 1, as
/// diffusers' inpainting pipeline does (`is_strength_max`): at t = 981 add_noise would still keep 7.6 % of z.
torch::Tensor start_latents(const schedulers::DDIMScheduler& scheduler, const torch::Tensor& z, const torch::Tensor& noise, int64_t t_start,
                            const InpaintOptions& o) {
  if (o.noise_strength >= 1.0) return noise.clone();
  return scheduler.add_noise(z, noise, torch::tensor({t_start}, torch::kInt64));
}

}  // namespace

torch::Tensor inpaint_crops(SdComponents& c, const torch::Tensor& crops, const std::vector<int64_t>& crop_of_mask, const torch::Tensor& masks,
                            const torch::Tensor& text_embedding, const InpaintOptions& o, const std::function<void(int64_t, int64_t)>& progress) {
  check_crops(c, crops, crop_of_mask, masks, o);
  require(text_embedding.dim() == 3 && text_embedding.size(0) == 1, "inpaint: text_embedding must be [1, L, D]");
  c10::InferenceMode inference;  // no autograd bookkeeping at all in the loop
  const int64_t M = masks.size(0), H = crops.size(2), W = crops.size(3);
  const int64_t h = H / c.vae_scale_factor(), w = W / c.vae_scale_factor();
  const torch::Tensor x_all = crops.to(c.device, c.dtype);
  const torch::Tensor all_masks = (masks > 0.5).to(c.device, c.dtype);
  const torch::Tensor context = text_embedding.to(c.device, c.dtype);

  schedulers::DDIMScheduler scheduler(c.scheduler);
  const std::vector<int64_t> steps = denoising_steps(scheduler, o);

  // z = s·E(x_u), once per distinct crop (with full-image windows: once per image), computed when first needed.
  std::vector<torch::Tensor> z_of_crop(static_cast<size_t>(crops.size(0)));
  auto latents_of = [&](int64_t first, int64_t count) {
    std::vector<int64_t> missing;
    for (int64_t i = first; i < first + count; ++i) {
      const int64_t u = crop_of_mask[static_cast<size_t>(i)];
      if (!z_of_crop[static_cast<size_t>(u)].defined() && std::find(missing.begin(), missing.end(), u) == missing.end()) missing.push_back(u);
    }
    if (!missing.empty()) {
      const torch::Tensor z = encode_latents(c, x_all.index_select(0, torch::tensor(missing, torch::kInt64).to(c.device)));
      for (size_t k = 0; k < missing.size(); ++k) z_of_crop[static_cast<size_t>(missing[k])] = z.narrow(0, static_cast<int64_t>(k), 1);
    }
    std::vector<torch::Tensor> z;
    for (int64_t i = first; i < first + count; ++i) z.push_back(z_of_crop[static_cast<size_t>(crop_of_mask[static_cast<size_t>(i)])]);
    return z;
  };

  torch::Tensor out = torch::empty({M, 3, H, W}, torch::kFloat32);
  int64_t batch = o.batch_size > 0 ? std::min(o.batch_size, M) : choose_batch_size(c, H, W, M);
  int64_t done = 0;
  while (done < M) {
    const int64_t b = std::min(batch, M - done);
    try {
      const std::vector<torch::Tensor> z_list = latents_of(done, b);
      // One crop for the whole batch (full-image windows): broadcast it, as the single-image loop always did.
      const bool one_crop = std::all_of(z_list.begin(), z_list.end(), [&](const torch::Tensor& t) { return t.is_same(z_list.front()); });
      const torch::Tensor z = one_crop ? z_list.front().expand({b, -1, -1, -1}) : torch::cat(z_list, 0);
      std::vector<int64_t> idx(crop_of_mask.begin() + done, crop_of_mask.begin() + done + b);
      const torch::Tensor x = one_crop ? x_all.narrow(0, idx.front(), 1) : x_all.index_select(0, torch::tensor(idx, torch::kInt64).to(c.device));
      const torch::Tensor m = all_masks.narrow(0, done, b);
      const torch::Tensor masked_latents = encode_latents(c, x * (1 - m));
      const torch::Tensor m_small = torch::nn::functional::interpolate(
          m, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kNearest));
      torch::Tensor z_t = start_latents(scheduler, z, mask_noise(c, o, done, b, h, w), steps.front(), o);
      torch::Tensor unet_input = kernels::mask_concat(z_t, masked_latents, m_small);
      for (int64_t t : steps) {
        // context [1, L, D] is shared by the batch: cross-attention keys/values once per step, not per mask.
        const torch::Tensor eps = c.unet->forward(unet_input, torch::tensor({t}, torch::kInt64), context);
        z_t = scheduler.step(eps, t, z_t);
        kernels::mask_concat(z_t, masked_latents, m_small, unet_input, /*latents_only=*/true);
      }
      out.narrow(0, done, b).copy_(decode_latents(c, z_t));
      done += b;
      if (progress) progress(done, M);
    } catch (const c10::Error& e) {
      if (!is_oom(e) || batch == 1) throw;
      batch = std::max<int64_t>(1, batch / 2);  // the estimate was too optimistic: retry this chunk smaller
#ifdef ANOMALYSD_WITH_CUDA
      c10::cuda::CUDACachingAllocator::emptyCache();
#endif
    }
  }
  return out;
}

torch::Tensor inpaint(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const torch::Tensor& text_embedding,
                      const InpaintOptions& o, const std::function<void(int64_t, int64_t)>& progress) {
  require(image.dim() == 3, "inpaint: image must be [3, H, W]");
  return inpaint_crops(c, image.unsqueeze(0), std::vector<int64_t>(static_cast<size_t>(masks.dim() == 4 ? masks.size(0) : 0), 0), masks,
                       text_embedding, o, progress);
}

torch::Tensor inpaint_naive_crops(SdComponents& c, const torch::Tensor& crops, const std::vector<int64_t>& crop_of_mask, const torch::Tensor& masks,
                                  const torch::Tensor& token_ids, const InpaintOptions& o) {
  check_crops(c, crops, crop_of_mask, masks, o);
  torch::NoGradGuard no_grad;
  const int64_t M = masks.size(0), H = crops.size(2), W = crops.size(3);
  const int64_t h = H / c.vae_scale_factor(), w = W / c.vae_scale_factor();
  torch::Tensor out = torch::empty({M, 3, H, W}, torch::kFloat32);
  for (int64_t i = 0; i < M; ++i) {
    // Everything recomputed per mask, as a one-mask-per-call port of the diffusers pipeline would.
    const torch::Tensor context = average_prompt_embedding(c, token_ids);
    const torch::Tensor x = crops.narrow(0, crop_of_mask[static_cast<size_t>(i)], 1).to(c.device, c.dtype);
    const torch::Tensor m = (masks.narrow(0, i, 1) > 0.5).to(c.device, c.dtype);
    const torch::Tensor z = encode_latents(c, x);
    schedulers::DDIMScheduler scheduler(c.scheduler);
    const std::vector<int64_t> timesteps = denoising_steps(scheduler, o);
    const torch::Tensor masked_latents = encode_latents(c, x * (1 - m));
    const torch::Tensor m_small = torch::nn::functional::interpolate(
        m, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kNearest));
    torch::Tensor z_t = start_latents(scheduler, z, mask_noise(c, o, i, 1, h, w), timesteps.front(), o);
    for (int64_t t : timesteps) {
      const torch::Tensor eps = c.unet->forward(torch::cat({z_t, masked_latents, m_small}, 1), torch::tensor({t}, torch::kInt64), context);
      z_t = scheduler.step(eps, t, z_t);
    }
    out.narrow(0, i, 1).copy_(decode_latents(c, z_t));
  }
  return out;
}

torch::Tensor inpaint_naive(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const torch::Tensor& token_ids,
                            const InpaintOptions& o) {
  require(image.dim() == 3, "inpaint: image must be [3, H, W]");
  return inpaint_naive_crops(c, image.unsqueeze(0), std::vector<int64_t>(static_cast<size_t>(masks.dim() == 4 ? masks.size(0) : 0), 0), masks,
                             token_ids, o);
}

}  // namespace asd::pipeline
