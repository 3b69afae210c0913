// AutoencoderKL (diffusers 0.21, models/autoencoder_kl.py + vae.py): the Stable Diffusion VAE, built from a
// diffusers `config.json`, with diffusers state-dict names ("encoder.down_blocks.0.resnets.1.conv2.weight").
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "io/json_config.h"
#include "io/state_dict.h"
#include "io/tensor_map.h"
#include "models/blocks.h"

namespace asd::models {

/// The architecture. Defaults are diffusers' AutoencoderKL defaults; the SD VAE config sets
/// block_out_channels [128,256,512,512], 4 down/up blocks, norm_num_groups 32.
struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels = {64};  ///< one DownEncoderBlock2D / UpDecoderBlock2D per entry
  int64_t layers_per_block = 1;                    ///< resnets per encoder block (decoder blocks have one more)
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 32;                        ///< informational
  /// Latent scaling used by the PIPELINE (latents = scaling_factor * sample of the posterior); encode and
  /// decode never apply it. SD 1.x/2.x: 0.18215.
  double scaling_factor = 0.18215;
};

/// Fills the config from a diffusers VAE config.json. force_upcast is accepted and ignored (fp32 engine);
/// block types other than DownEncoderBlock2D / UpDecoderBlock2D, act_fn other than silu, and later
/// diffusers options with non-default values (mid_block_add_attention false, use_quant_conv false,
/// use_post_quant_conv false, shift_factor, latents_mean/std) throw ASD_ERR_UNSUPPORTED naming the key.
AutoencoderKLConfig vae_config_from_json(const JsonConfig& json);

/// UNetMidBlock2D of the VAE: resnets.0 -> attentions.0 (single head over all H*W positions, group_norm,
/// residual) -> resnets.1, without time embedding.
class VaeMidBlockImpl : public torch::nn::Module {
 public:
  VaeMidBlockImpl(int64_t channels, int64_t groups);
  torch::Tensor forward(torch::Tensor x);

 private:
  ResnetBlock2D resnet0_{nullptr}, resnet1_{nullptr};
  Attention attention_{nullptr};
};
TORCH_MODULE(VaeMidBlock);

/// DownEncoderBlock2D (resnets + optional downsamplers.0, padding 0) or UpDecoderBlock2D (resnets +
/// optional upsamplers.0): the same shape of module, told apart by `up`.
class VaeBlockImpl : public torch::nn::Module {
 public:
  VaeBlockImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups, bool up, bool resample);
  torch::Tensor forward(torch::Tensor x);

 private:
  std::vector<ResnetBlock2D> resnets_;
  Downsample2D downsampler_{nullptr};
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(VaeBlock);

/// Encoder (double_z) or Decoder: conv_in, down_blocks / mid_block / up_blocks, conv_norm_out, SiLU, conv_out.
class VaeCoderImpl : public torch::nn::Module {
 public:
  VaeCoderImpl(const AutoencoderKLConfig& c, bool decoder);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool decoder_;
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::vector<VaeBlock> blocks_;
  VaeMidBlock mid_block_{nullptr};
  torch::nn::GroupNorm conv_norm_out_{nullptr};
};
TORCH_MODULE(VaeCoder);

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(const AutoencoderKLConfig& config);

  /// image [B,in_channels,H,W] in [-1,1] -> (mean, logvar) of the diagonal Gaussian posterior, each
  /// [B,latent_channels,H/2^(levels-1),W/2^(levels-1)]; logvar clamped to [-30,20] as diffusers does.
  std::pair<torch::Tensor, torch::Tensor> encode(const torch::Tensor& image);
  /// latents [B,latent_channels,h,w] (already divided by scaling_factor) -> image [B,out_channels,H,W] ~ [-1,1].
  torch::Tensor decode(const torch::Tensor& latents);

  const AutoencoderKLConfig& config() const { return config_; }
  double scaling_factor() const { return config_.scaling_factor; }

 private:
  AutoencoderKLConfig config_;
  VaeCoder encoder_{nullptr}, decoder_{nullptr};
  torch::nn::Conv2d quant_conv_{nullptr}, post_quant_conv_{nullptr};
};
TORCH_MODULE(AutoencoderKL);

/// A model built from the config (random initial weights, float32, CPU).
AutoencoderKL vae_from_config(const JsonConfig& json);

/// Load options for VAE checkpoints. The mid-block attention exists in two spellings: diffusers >= 0.15
/// `to_q/to_k/to_v/to_out.0` and the older `query/key/value/proj_attn`, and its projection weights may be
/// stored as Linear [C,C] or as 1x1 conv [C,C,1,1]; `remap` maps the old names to the new ones and squeezes
/// 4-D projection weights to [C,C]. Every other key passes through unchanged.
LoadOptions vae_load_options();

/// load_state_dict(vae, weights, vae_load_options()).
void load_vae_weights(AutoencoderKLImpl& vae, const TensorMap& weights);

/// Builds the VAE from `config_path`, loads `weights_path` (safetensors, either attention spelling) and returns
/// it in eval mode with `dtype` on `device`.
AutoencoderKL load_vae(const std::string& config_path, const std::string& weights_path, torch::ScalarType dtype = torch::kFloat32,
                       torch::Device device = torch::kCPU);

}  // namespace asd::models
