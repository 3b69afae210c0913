// UNet2DConditionModel (diffusers 0.21, models/unet_2d_condition.py) for Stable Diffusion 1.x / 2.x, including
// the 9-channel inpainting variant, built from a diffusers `config.json`. Parameter names are the diffusers
// state-dict names ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight").
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "io/json_config.h"
#include "models/blocks.h"

namespace asd::models {

/// The architecture. Defaults are diffusers' UNet2DConditionModel defaults (the SD 1.x UNet, 4 input channels).
/// Per-level lists have one entry per down block (level i); the up path uses them reversed.
struct UNet2DConditionConfig {
  int64_t sample_size = 64;                 ///< latent size the model was trained at (informational)
  int64_t in_channels = 4;                  ///< 4, or 9 for inpainting (latents + mask + masked-image latents)
  int64_t out_channels = 4;
  bool center_input_sample = false;         ///< sample = 2 * sample - 1 before conv_in
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"};
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";  ///< or "" for no mid block (config null)
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<int64_t> layers_per_block = {2, 2, 2, 2};
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1.0;
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  std::vector<int64_t> cross_attention_dim = {768, 768, 768, 768};
  std::vector<int64_t> transformer_layers_per_block = {1, 1, 1, 1};
  /// Number of attention HEADS per level (see the trap in unet_config_from_json); head dim = channels / heads.
  std::vector<int64_t> num_attention_heads = {8, 8, 8, 8};
  bool use_linear_projection = false;       ///< SD 2.x: proj_in/proj_out are Linear, not 1x1 Conv2d
  bool upcast_attention = false;            ///< SD 2.1: attention scores in float32
  int64_t time_embedding_dim = 0;           ///< 0: 4 * block_out_channels[0]
};

/// Fills the config from a diffusers UNet config.json. Known keys with values this engine does not implement
/// (class/addition embeddings, time_cond_proj_dim, encoder_hid_dim, resnet_time_scale_shift != "default",
/// dual/only cross attention, non-positional time embedding, conv kernels != 3, other block types, act_fn
/// other than silu, dropout != 0, ...) throw ASD_ERR_UNSUPPORTED naming the key; malformed values
/// ASD_ERR_FORMAT.
UNet2DConditionConfig unet_config_from_json(const JsonConfig& json);

/// CrossAttnDownBlock2D (with attentions) or DownBlock2D: resnets[i] (+ attentions[i]), then downsamplers.0.
class UNetDownBlockImpl : public torch::nn::Module {
 public:
  UNetDownBlockImpl(const UNet2DConditionConfig& c, size_t level, int64_t in_channels, int64_t temb_channels, bool cross_attention,
                    bool add_downsample);
  /// Returns the block output; appends every intermediate state (the skip connections) to `skips`.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context, std::vector<torch::Tensor>& skips);

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Downsample2D downsampler_{nullptr};
};
TORCH_MODULE(UNetDownBlock);

/// CrossAttnUpBlock2D (with attentions) or UpBlock2D: concat skip -> resnets[i] (+ attentions[i]), then upsamplers.0.
class UNetUpBlockImpl : public torch::nn::Module {
 public:
  UNetUpBlockImpl(const UNet2DConditionConfig& c, size_t up_index, int64_t temb_channels, bool cross_attention, bool add_upsample);
  size_t num_resnets() const { return resnets_.size(); }
  /// Pops its skip connections from the back of `skips`. `upsample_size`: explicit output size (odd inputs).
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context, std::vector<torch::Tensor>& skips,
                        std::optional<std::vector<int64_t>> upsample_size);

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(UNetUpBlock);

/// UNetMidBlock2DCrossAttn: resnets.0 -> (attentions.i -> resnets.i+1).
class UNetMidBlock2DCrossAttnImpl : public torch::nn::Module {
 public:
  UNetMidBlock2DCrossAttnImpl(const UNet2DConditionConfig& c, int64_t temb_channels);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context);

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
};
TORCH_MODULE(UNetMidBlock2DCrossAttn);

class UNet2DConditionModelImpl : public torch::nn::Module {
 public:
  explicit UNet2DConditionModelImpl(const UNet2DConditionConfig& config);

  /// Predicts the noise (or v) for `sample` [B,in_channels,H,W] at `timestep` ([B], [1] or a 0-d tensor,
  /// int64 or floating; one value is broadcast to the batch) given `encoder_hidden_states` [B,L,cross_dim]
  /// (the text encoder output), or [1,L,cross_dim] shared by the whole batch (its cross-attention keys and
  /// values are then computed once; see AttentionImpl::forward). Returns [B,out_channels,H,W] in the model dtype. H and W need not be
  /// multiples of 2^(levels-1): the up path then upsamples to the skip sizes.
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& encoder_hidden_states);

  const UNet2DConditionConfig& config() const { return config_; }

 private:
  UNet2DConditionConfig config_;
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  TimestepEmbedding time_embedding_{nullptr};
  std::vector<UNetDownBlock> down_blocks_;
  UNetMidBlock2DCrossAttn mid_block_{nullptr};
  std::vector<UNetUpBlock> up_blocks_;
  torch::nn::GroupNorm conv_norm_out_{nullptr};
};
TORCH_MODULE(UNet2DConditionModel);

/// A model built from the config (random initial weights, float32, CPU).
UNet2DConditionModel unet_from_config(const JsonConfig& json);

/// Builds the UNet from `config_path` (config.json), loads `weights_path` (safetensors, diffusers names) and
/// returns it in eval mode with `dtype` on `device`. Errors: see unet_config_from_json, safetensors::load and
/// load_state_dict (a missing key or a shape mismatch names the key and the shapes).
UNet2DConditionModel load_unet(const std::string& config_path, const std::string& weights_path, torch::ScalarType dtype = torch::kFloat32,
                               torch::Device device = torch::kCPU);

}  // namespace asd::models
