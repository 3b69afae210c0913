// The Stable Diffusion inpainting components as one object: UNet (9 input channels), VAE, CLIP text encoder
// and the DDIM scheduler configuration, loaded from a diffusers folder or built as the small `compact` preset.
//
// Folder layout (diffusers save_pretrained; the same layout is written by save_folder, so a fine-tuned
// checkpoint is itself a loadable diffusers folder):
//   model_index.json
//   unet/config.json          unet/diffusion_pytorch_model[.fp16].safetensors
//   vae/config.json           vae/diffusion_pytorch_model[.fp16].safetensors
//   text_encoder/config.json  text_encoder/model[.fp16].safetensors
//   scheduler/scheduler_config.json
//   tokenizer/                (read by the managed host: vocab.json, merges.txt, tokenizer_config.json)
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "models/autoencoder_kl.h"
#include "models/clip_text.h"
#include "models/unet_2d_condition.h"
#include "schedulers/ddim.h"

namespace asd::pipeline {

struct SdComponents {
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};
  ClipTextModel text_encoder{nullptr};
  schedulers::DDIMSchedulerConfig scheduler;
  /// The config.json objects the modules were built from (written back by save_folder).
  nlohmann::json unet_config, vae_config, text_encoder_config, scheduler_config;
  /// Latents fed to the UNet are scaling_factor * E(x) (vae config "scaling_factor"; SD: 0.18215).
  double scaling_factor = 1.0;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
  /// "compact" or the folder (or single file) the components were loaded from.
  std::string source;
  /// For a single-file checkpoint: what was read from it ({"family", "description", "file_dtype", "tokenizer_pad_token",
  /// "skipped_keys"}); null otherwise.
  nlohmann::json single_file;

  /// Latent channels (4 for SD) and the VAE's spatial downsampling factor (8 for SD).
  int64_t latent_channels() const;
  int64_t vae_scale_factor() const;
  /// Moves every module to `device` / `dtype`.
  void to(torch::Device device, torch::ScalarType dtype);
};

/// Loads a diffusers Stable Diffusion (inpainting) folder. `variant` "" prefers the full-precision weights
/// and falls back to the ".fp16" variant when only that exists; "fp16" asks for the variant. Weights are
/// converted to `dtype` on load. The UNet must take 9 input channels (an inpainting checkpoint).
/// Errors name the file and the problem: ASD_ERR_IO (missing file), ASD_ERR_NOT_FOUND (missing weight key,
/// with the expected shape), ASD_ERR_FORMAT (shape mismatch: key, expected and found shape; corrupt file),
/// ASD_ERR_UNSUPPORTED (a config value, naming the key).
SdComponents load_diffusers_folder(const std::string& folder, torch::ScalarType dtype = torch::kFloat32,
                                   torch::Device device = torch::kCPU, const std::string& variant = "");

/// Writes the components as a diffusers folder (configs + fp32/fp16/bf16 safetensors in the modules' dtype),
/// each file atomically. `extra_index` entries are merged into model_index.json.
void save_folder(const SdComponents& components, const std::string& folder, const nlohmann::json& extra_index = {});

/// The `compact` preset's configs (diffusers format). Sizes, for 128x128 images (32x32 latents):
///   VAE: block_out_channels [32, 64, 64], 1 resnet per level, 4 latent channels, downsampling x4;
///   UNet: 9 -> 4 channels, block_out_channels [64, 128, 128], 1 resnet per level, cross-attention only at
///         the two lower levels (16x16 and 8x8 for a 32x32 latent: attention stays cheap on a CPU), 4 heads,
///         linear projections (SD 2 style), cross_attention_dim 64;
///   text encoder: CLIP, 2 layers, width 64, 4 heads, the real 49408-token vocabulary (SD's tokenizer works).
///   scheduler: SD's DDIM config (scaled_linear 0.00085..0.012, 1000 steps, leading, steps_offset 1), epsilon.
/// Parameter counts are printed by the benchmark and listed in the README.
nlohmann::json compact_unet_config();
nlohmann::json compact_vae_config();
nlohmann::json compact_text_encoder_config();
nlohmann::json compact_scheduler_config();

/// The compact preset with freshly initialised weights (seeded with `seed`), float32 on the CPU.
SdComponents compact_preset(uint64_t seed);

/// The architecture of Stable Diffusion 2 inpainting (stabilityai/stable-diffusion-2-inpainting configs: UNet
/// 320/640/1280/1280, heads 5/10/20/20, linear projections, cross-attention 1024; SD VAE; OpenCLIP ViT-H text
/// encoder, 23 layers of width 1024) with fresh random weights (seeded), for timing without a checkpoint.
SdComponents sd2_inpainting_random(uint64_t seed);

/// Number of parameters of a module.
int64_t parameter_count(const torch::nn::Module& module);

}  // namespace asd::pipeline
