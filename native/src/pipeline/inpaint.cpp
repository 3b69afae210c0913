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
  int64_t bytes = 0;
  for (size_t level = 0; level < u.block_out_channels.size(); ++level) {
    const int64_t hw = h * w;
    // ~24 live feature maps per level (resnets, norms, skips, up path) + attention score matrices.
    bytes += 24 * u.block_out_channels[level] * hw * elem;
    if (u.down_block_types[level].rfind("CrossAttn", 0) == 0) bytes += 2 * u.num_attention_heads[level] * hw * hw * elem;
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

torch::Tensor inpaint(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const torch::Tensor& text_embedding,
                      const InpaintOptions& o, const std::function<void(int64_t, int64_t)>& progress) {
  check_inputs(c, image, masks, o);
  require(text_embedding.dim() == 3 && text_embedding.size(0) == 1, "inpaint: text_embedding must be [1, L, D]");
  c10::InferenceMode inference;  // no autograd bookkeeping at all in the loop
  const int64_t M = masks.size(0), H = image.size(1), W = image.size(2);
  const int64_t h = H / c.vae_scale_factor(), w = W / c.vae_scale_factor();
  const torch::Tensor x = image.unsqueeze(0).to(c.device, c.dtype);
  const torch::Tensor all_masks = (masks > 0.5).to(c.device, c.dtype);
  const torch::Tensor context = text_embedding.to(c.device, c.dtype);

  schedulers::DDIMScheduler scheduler(c.scheduler);
  const torch::Tensor timesteps = schedulers::timesteps_for_strength(scheduler.set_timesteps(o.num_inference_steps), o.noise_strength);
  const std::vector<int64_t> steps(timesteps.data_ptr<int64_t>(), timesteps.data_ptr<int64_t>() + timesteps.numel());

  const torch::Tensor z = encode_latents(c, x);  // [1, 4, h, w], once per image
  torch::Tensor out = torch::empty({M, 3, H, W}, torch::kFloat32);
  if (steps.empty()) {  // λ = 0: nothing is re-noised; every "inpainting" is the reconstruction D(E(x))
    out.copy_(decode_latents(c, z).expand({M, 3, H, W}));
    return out;
  }

  int64_t batch = o.batch_size > 0 ? std::min(o.batch_size, M) : choose_batch_size(c, H, W, M);
  int64_t done = 0;
  while (done < M) {
    const int64_t b = std::min(batch, M - done);
    try {
      const torch::Tensor m = all_masks.narrow(0, done, b);
      const torch::Tensor masked_latents = encode_latents(c, x * (1 - m));
      const torch::Tensor m_small = torch::nn::functional::interpolate(
          m, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kNearest));
      torch::Tensor z_t = scheduler.add_noise(z.expand({b, -1, -1, -1}), mask_noise(c, o, done, b, h, w),
                                              torch::tensor({steps.front()}, torch::kInt64));
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

torch::Tensor inpaint_naive(SdComponents& c, const torch::Tensor& image, const torch::Tensor& masks, const torch::Tensor& token_ids,
                            const InpaintOptions& o) {
  check_inputs(c, image, masks, o);
  torch::NoGradGuard no_grad;
  const int64_t M = masks.size(0), H = image.size(1), W = image.size(2);
  const int64_t h = H / c.vae_scale_factor(), w = W / c.vae_scale_factor();
  torch::Tensor out = torch::empty({M, 3, H, W}, torch::kFloat32);
  for (int64_t i = 0; i < M; ++i) {
    // Everything recomputed per mask, as a one-mask-per-call port of the diffusers pipeline would.
    const torch::Tensor context = average_prompt_embedding(c, token_ids);
    const torch::Tensor x = image.unsqueeze(0).to(c.device, c.dtype);
    const torch::Tensor m = (masks.narrow(0, i, 1) > 0.5).to(c.device, c.dtype);
    const torch::Tensor z = encode_latents(c, x);
    schedulers::DDIMScheduler scheduler(c.scheduler);
    const torch::Tensor timesteps = schedulers::timesteps_for_strength(scheduler.set_timesteps(o.num_inference_steps), o.noise_strength);
    if (timesteps.numel() == 0) {
      out.narrow(0, i, 1).copy_(decode_latents(c, z));
      continue;
    }
    const torch::Tensor masked_latents = encode_latents(c, x * (1 - m));
    const torch::Tensor m_small = torch::nn::functional::interpolate(
        m, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kNearest));
    torch::Tensor z_t = scheduler.add_noise(z, mask_noise(c, o, i, 1, h, w), timesteps.narrow(0, 0, 1));
    for (int64_t k = 0; k < timesteps.numel(); ++k) {
      const int64_t t = timesteps[k].item<int64_t>();
      const torch::Tensor eps = c.unet->forward(torch::cat({z_t, masked_latents, m_small}, 1), torch::tensor({t}, torch::kInt64), context);
      z_t = scheduler.step(eps, t, z_t);
    }
    out.narrow(0, i, 1).copy_(decode_latents(c, z_t));
  }
  return out;
}

}  // namespace asd::pipeline
