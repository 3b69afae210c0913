// The original Stable Diffusion checkpoint layout (CompVis/Stability "LDM" single files: sd-v1-5-inpainting.ckpt,
// 512-inpainting-ema.safetensors) and its correspondence with the diffusers / transformers names the modules use.
// Reference: diffusers' loaders/single_file_utils.py (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
// convert_open_clip_checkpoint, create_unet_diffusers_config, create_vae_diffusers_config), read, not copied: the
// mapping here goes from each module key to its file key, so a missing file key is reported under its own name.
//
//   UNet          model.diffusion_model.   input_blocks.N.{0 resnet | 1 transformer | 0.op downsampler},
//                                          middle_block.{0,1,2}, output_blocks.N.{0 resnet, 1 transformer or upsampler,
//                                          2 upsampler}, time_embed.{0,2}, out.{0,2}; resnets use in_layers/emb_layers/
//                                          out_layers/skip_connection
//   VAE           first_stage_model.       encoder.down.I.block.J, decoder.up.I (reversed levels), mid.{block_1,attn_1,
//                                          block_2}; the attention as 1x1 convolutions q, k, v, proj_out
//   text (SD 1.x) cond_stage_model.transformer.text_model.   Hugging Face CLIP names
//   text (SD 2.x) cond_stage_model.model.  OpenCLIP: resblocks.N.{ln_1, attn.in_proj_{weight,bias} (q, k, v
//                                          concatenated), attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final,
//                                          token_embedding, positional_embedding; the last residual block is unused
//                                          (SD 2.x conditions on the penultimate layer)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/tensor_map.h"

namespace asd::ldm {

inline const std::string kUnetPrefix = "model.diffusion_model.";
inline const std::string kVaePrefix = "first_stage_model.";
inline const std::string kClipPrefix = "cond_stage_model.transformer.";  ///< SD 1.x
inline const std::string kOpenClipPrefix = "cond_stage_model.model.";    ///< SD 2.x

enum class Family { kSd1, kSd2 };
std::string family_name(Family f);  ///< "SD 1.x" / "SD 2.x"

/// Where a module weight lives in the file and how it is stored there.
struct Source {
  enum class Op {
    kSame,        ///< the same tensor
    kSqueeze1x1,  ///< stored as a 1x1 convolution [C, C, 1, 1]; the module holds [C, C]
    kChunk        ///< part `part` of 3 along dim 0 of the stored tensor (OpenCLIP's fused q, k, v projection)
  };
  std::string key;  ///< the full file key
  Op op = Op::kSame;
  int part = 0;
};

/// The architecture facts the correspondence depends on, from the modules' configs.
struct Layout {
  Family family = Family::kSd1;
  int64_t unet_layers_per_block = 2;
  std::vector<bool> up_block_has_attention;  ///< per diffusers up block (CrossAttnUpBlock2D)
  int64_t vae_levels = 4;
  /// The file's index of the decoder level that diffusers calls up_blocks.0 (the deepest); -1 = vae_levels - 1. diffusers'
  /// scripts/convert_diffusers_to_original_stable_diffusion.py numbers the decoder's levels as if there were always 4
  /// (up.{3 - i}), so its files of a VAE with fewer levels hold up.1..up.3: see decoder_top_in().
  int64_t vae_decoder_top = -1;
  int64_t text_layers = 12;

  /// From the three diffusers configs (ASD_ERR_UNSUPPORTED for a UNet whose levels have different depths).
  static Layout from_configs(Family family, const nlohmann::json& unet, const nlohmann::json& vae, const nlohmann::json& text_encoder);
};

/// The highest decoder level index among the file's "first_stage_model.decoder.up.N." keys (-1 if none).
int64_t decoder_top_in(const TensorMap& file);

/// The file key of a module key (UNet, VAE, text encoder names as the modules register them).
Source unet_source(const std::string& key, const Layout& layout);
Source vae_source(const std::string& key, const Layout& layout);
Source text_source(const std::string& key, const Layout& layout);

/// The module's tensor from the file's (a view; no copy): the op of `source` applied to `stored`.
/// ASD_ERR_FORMAT naming the key when the stored shape does not allow the op.
torch::Tensor apply(const Source& source, const torch::Tensor& stored, const std::string& file);

/// True for file keys that hold no weight of the three modules and are skipped on purpose: everything outside the
/// three prefixes (betas, alphas_cumprod, model_ema.*, ...), OpenCLIP's text_projection, logit_scale and attn_mask,
/// the residual blocks past the text encoder's depth, transformers' position_ids buffer.
bool is_skipped(const std::string& key, const Layout& layout);

/// The family from the text encoder's prefix; ASD_ERR_FORMAT if the file has no UNet, VAE or text-encoder weights.
Family detect_family(const TensorMap& file);

/// The diffusers configs read from the weights' keys and shapes (see the README): block widths and depths, attention
/// levels, linear vs conv projections, context width, VAE levels and widths, text-encoder depth, width and
/// vocabulary. Not in the weights, taken from the standard models: head counts (SD 1.x: 8 heads; SD 2.x: head
/// dimension 64, text encoders too), group norms of 32, SD's VAE scaling factor 0.18215.
struct Configs {
  nlohmann::json unet, vae, text_encoder;
};
Configs detect_configs(const TensorMap& file, Family family);

/// The original-layout state dict of three modules' state dicts (the inverse of the correspondence), e.g. to write a
/// single file with the project's own safetensors writer.
TensorMap to_ldm(const TensorMap& unet, const TensorMap& vae, const TensorMap& text_encoder, const Layout& layout);

}  // namespace asd::ldm
