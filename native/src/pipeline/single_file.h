// Single-file Stable Diffusion checkpoints (the original LDM layout, `.safetensors` or PyTorch's zip `.ckpt`):
// loading into the engine's modules, writing one (for tests and benchmarks, with the project's safetensors writer),
// and converting one to a diffusers folder.
#pragma once

#include <optional>
#include <string>

#include <torch/torch.h>

#include "io/ldm_layout.h"
#include "pipeline/sd_pipeline.h"

namespace asd::pipeline {

struct SingleFileOptions {
  /// "" reads the architecture from the weights; otherwise a diffusers-layout folder whose unet/, vae/ and
  /// text_encoder/ hold config.json (their weights are ignored) and, optionally, scheduler/scheduler_config.json
  /// (diffusers' from_single_file(config=...)).
  std::string config_dir;
  /// "" = the scheduler's default (epsilon, as SD's inpainting models), else epsilon | v_prediction | sample.
  std::string prediction_type;
};

/// True if `path` is a regular file (a single-file checkpoint) rather than a folder.
bool is_single_file(const std::string& path);

/// Loads a single-file checkpoint: the file is memory-mapped, each weight is copied once into the module's
/// parameter (converted to `dtype` in that copy; nullopt = the file's own dtype, that of its UNet weights) and its
/// pages are released after the copy. Keys that are not model weights are skipped (ldm::is_skipped); a missing or
/// mis-shaped weight is an error naming the file key (ASD_ERR_NOT_FOUND / ASD_ERR_FORMAT), as is a weight the
/// architecture has no place for. The UNet must take 9 input channels (ASD_ERR_UNSUPPORTED otherwise). The scheduler
/// is SD's DDIM configuration (scaled-linear betas 0.00085-0.012, 1000 steps, epsilon unless overridden).
SdComponents load_single_file(const std::string& path, const SingleFileOptions& options, std::optional<torch::ScalarType> dtype,
                              torch::Device device = torch::kCPU);

/// Writes `components` as one original-layout safetensors file (atomically), with the extra keys real files carry:
/// betas, alphas_cumprod, model_ema.decay / num_updates and, for SD 2.x, OpenCLIP's unused last residual block,
/// text_projection and logit_scale. `family` picks the text encoder's layout.
void save_single_file(const SdComponents& components, const std::string& path, ldm::Family family);

/// `anomalysd convert`: loads `path` in its own dtype and writes the diffusers folder layout to `out_dir` (unet/,
/// vae/, text_encoder/, tokenizer/, scheduler/, model_index.json; safetensors) atomically: a staging sibling, then a
/// rename. `tokenizer_dir` ("" = `config_dir`/tokenizer) holds the CLIP BPE files (vocab.json, merges.txt), copied with
/// a tokenizer_config.json giving the family's pad token (SD 2.x: "!"). A non-empty `out_dir` is refused unless an
/// earlier convert wrote it (ASD_ERR_INVALID_ARGUMENT). Returns the detected description.
std::string convert_single_file(const std::string& path, const SingleFileOptions& options, const std::string& out_dir,
                                const std::string& tokenizer_dir);

}  // namespace asd::pipeline
