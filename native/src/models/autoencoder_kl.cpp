#include "models/autoencoder_kl.h"

#include "core/error.h"
#include "io/safetensors.h"

namespace asd::models {

namespace nn = torch::nn;

// diffusers' Encoder/Decoder hard-code resnet eps 1e-6 (config norm_eps is not used by the VAE).
constexpr double kVaeEps = 1e-6;

AutoencoderKLConfig vae_config_from_json(const JsonConfig& j) {
  AutoencoderKLConfig c;
  j.one_of("act_fn", "silu", {"silu", "swish"});
  j.expect("mid_block_add_attention", true);
  j.expect("use_quant_conv", true);
  j.expect("use_post_quant_conv", true);
  for (const char* key : {"shift_factor", "latents_mean", "latents_std"}) {
    if (j.has(key)) j.unsupported(key, "only null is supported");
  }
  c.in_channels = j.get<int64_t>("in_channels", c.in_channels);
  c.out_channels = j.get<int64_t>("out_channels", c.out_channels);
  c.block_out_channels = j.get<std::vector<int64_t>>("block_out_channels", c.block_out_channels);
  const size_t n = c.block_out_channels.size();
  const auto down = j.get<std::vector<std::string>>("down_block_types", std::vector<std::string>(n, "DownEncoderBlock2D"));
  const auto up = j.get<std::vector<std::string>>("up_block_types", std::vector<std::string>(n, "UpDecoderBlock2D"));
  for (const auto& t : down) {
    if (t != "DownEncoderBlock2D") j.unsupported("down_block_types", "block type '" + t + "' is not implemented");
  }
  for (const auto& t : up) {
    if (t != "UpDecoderBlock2D") j.unsupported("up_block_types", "block type '" + t + "' is not implemented");
  }
  if (n == 0 || down.size() != n || up.size() != n) {
    throw_error(ASD_ERR_FORMAT, "config '" + j.source() + "': block_out_channels, down_block_types and up_block_types must have the same non-zero length");
  }
  c.layers_per_block = j.get<int64_t>("layers_per_block", c.layers_per_block);
  c.latent_channels = j.get<int64_t>("latent_channels", c.latent_channels);
  c.norm_num_groups = j.get<int64_t>("norm_num_groups", c.norm_num_groups);
  c.sample_size = j.get<int64_t>("sample_size", c.sample_size);
  c.scaling_factor = j.get<double>("scaling_factor", c.scaling_factor);
  (void)j.get<bool>("force_upcast", true);  // accepted (type-checked) and ignored: the engine computes the VAE in fp32
  for (int64_t ch : c.block_out_channels) {
    if (ch <= 0 || ch % c.norm_num_groups != 0) {
      throw_error(ASD_ERR_FORMAT, "config '" + j.source() + "': block_out_channels entry " + std::to_string(ch) + " is not a positive multiple of norm_num_groups");
    }
  }
  if (c.layers_per_block <= 0 || c.latent_channels <= 0) throw_error(ASD_ERR_FORMAT, "config '" + j.source() + "': bad layers_per_block or latent_channels");
  return c;
}

// ---------------------------------------------------------------------------------------------------
namespace {
ResnetBlock2D vae_resnet(int64_t in, int64_t out, int64_t groups) {
  ResnetBlock2DOptions o;
  o.in_channels = in;
  o.out_channels = out;
  o.temb_channels = 0;
  o.groups = groups;
  o.eps = kVaeEps;
  return ResnetBlock2D(o);
}
}  // namespace

VaeMidBlockImpl::VaeMidBlockImpl(int64_t channels, int64_t groups) {
  nn::ModuleList resnets, attentions;
  resnet0_ = vae_resnet(channels, channels, groups);
  resnet1_ = vae_resnet(channels, channels, groups);
  AttentionOptions a;
  a.query_dim = channels;
  a.heads = 1;
  a.dim_head = channels;
  a.bias = true;
  a.upcast_softmax = true;
  a.norm_num_groups = groups;
  a.eps = kVaeEps;
  a.residual_connection = true;
  a.rescale_output_factor = 1.0;
  attention_ = Attention(a);
  resnets->push_back(resnet0_);
  resnets->push_back(resnet1_);
  attentions->push_back(attention_);
  register_module("attentions", attentions);
  register_module("resnets", resnets);
}

torch::Tensor VaeMidBlockImpl::forward(torch::Tensor x) {
  x = resnet0_->forward(x);
  x = attention_->forward(x);
  return resnet1_->forward(x);
}

VaeBlockImpl::VaeBlockImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups, bool up, bool resample) {
  nn::ModuleList resnets;
  for (int64_t i = 0; i < layers; ++i) {
    resnets_.push_back(vae_resnet(i == 0 ? in_channels : out_channels, out_channels, groups));
    resnets->push_back(resnets_.back());
  }
  register_module("resnets", resnets);
  if (resample) {
    nn::ModuleList list;
    if (up) {
      upsampler_ = Upsample2D(out_channels, out_channels);
      list->push_back(upsampler_);
      register_module("upsamplers", list);
    } else {
      downsampler_ = Downsample2D(out_channels, out_channels, /*padding=*/0);
      list->push_back(downsampler_);
      register_module("downsamplers", list);
    }
  }
}

torch::Tensor VaeBlockImpl::forward(torch::Tensor x) {
  for (auto& r : resnets_) x = r->forward(x);
  if (downsampler_) x = downsampler_->forward(x);
  if (upsampler_) x = upsampler_->forward(x);
  return x;
}

VaeCoderImpl::VaeCoderImpl(const AutoencoderKLConfig& c, bool decoder) : decoder_(decoder) {
  const auto& boc = c.block_out_channels;
  const size_t n = boc.size();
  const int64_t g = c.norm_num_groups;
  nn::ModuleList blocks;
  if (!decoder) {
    conv_in_ = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(c.in_channels, boc[0], 3).padding(1)));
    int64_t out = boc[0];
    for (size_t i = 0; i < n; ++i) {
      const int64_t in = out;
      out = boc[i];
      blocks_.emplace_back(in, out, c.layers_per_block, g, /*up=*/false, /*resample=*/i + 1 < n);
      blocks->push_back(blocks_.back());
    }
    register_module("down_blocks", blocks);
    mid_block_ = register_module("mid_block", VaeMidBlock(boc[n - 1], g));
    conv_norm_out_ = register_module("conv_norm_out", nn::GroupNorm(nn::GroupNormOptions(g, boc[n - 1]).eps(kVaeEps)));
    conv_out_ = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(boc[n - 1], 2 * c.latent_channels, 3).padding(1)));
  } else {
    conv_in_ = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(c.latent_channels, boc[n - 1], 3).padding(1)));
    mid_block_ = register_module("mid_block", VaeMidBlock(boc[n - 1], g));
    int64_t out = boc[n - 1];
    for (size_t i = 0; i < n; ++i) {
      const int64_t prev = out;
      out = boc[n - 1 - i];
      blocks_.emplace_back(prev, out, c.layers_per_block + 1, g, /*up=*/true, /*resample=*/i + 1 < n);
      blocks->push_back(blocks_.back());
    }
    register_module("up_blocks", blocks);
    conv_norm_out_ = register_module("conv_norm_out", nn::GroupNorm(nn::GroupNormOptions(g, boc[0]).eps(kVaeEps)));
    conv_out_ = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(boc[0], c.out_channels, 3).padding(1)));
  }
}

torch::Tensor VaeCoderImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = conv_in_->forward(input);
  if (decoder_) {
    x = mid_block_->forward(x);
    for (auto& b : blocks_) x = b->forward(x);
  } else {
    for (auto& b : blocks_) x = b->forward(x);
    x = mid_block_->forward(x);
  }
  return conv_out_->forward(torch::silu(normalize(conv_norm_out_, x)));
}

// ---------------------------------------------------------------------------------------------------
AutoencoderKLImpl::AutoencoderKLImpl(const AutoencoderKLConfig& config) : config_(config) {
  encoder_ = register_module("encoder", VaeCoder(config_, /*decoder=*/false));
  decoder_ = register_module("decoder", VaeCoder(config_, /*decoder=*/true));
  const int64_t z = config_.latent_channels;
  quant_conv_ = register_module("quant_conv", nn::Conv2d(nn::Conv2dOptions(2 * z, 2 * z, 1)));
  post_quant_conv_ = register_module("post_quant_conv", nn::Conv2d(nn::Conv2dOptions(z, z, 1)));
}

std::pair<torch::Tensor, torch::Tensor> AutoencoderKLImpl::encode(const torch::Tensor& image) {
  require(image.dim() == 4 && image.size(1) == config_.in_channels, "vae encode: image must be [B," + std::to_string(config_.in_channels) + ",H,W]");
  const torch::Tensor moments = quant_conv_->forward(encoder_->forward(image));
  const auto parts = moments.chunk(2, 1);
  return {parts[0], torch::clamp(parts[1], -30.0, 20.0)};
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& latents) {
  require(latents.dim() == 4 && latents.size(1) == config_.latent_channels,
          "vae decode: latents must be [B," + std::to_string(config_.latent_channels) + ",h,w]");
  return decoder_->forward(post_quant_conv_->forward(latents));
}

// ---------------------------------------------------------------------------------------------------
AutoencoderKL vae_from_config(const JsonConfig& json) { return AutoencoderKL(vae_config_from_json(json)); }

LoadOptions vae_load_options() {
  LoadOptions o;
  o.remap = [](const std::string& key, torch::Tensor& t) -> std::string {
    const std::string marker = ".attentions.";
    const size_t at = key.find(marker);
    if (at == std::string::npos) return key;
    const size_t name_at = key.find('.', at + marker.size());  // after the attention index
    if (name_at == std::string::npos) return key;
    const std::string prefix = key.substr(0, name_at + 1);
    std::string rest = key.substr(name_at + 1);
    static const std::pair<const char*, const char*> kOld[] = {
        {"query.", "to_q."}, {"key.", "to_k."}, {"value.", "to_v."}, {"proj_attn.", "to_out.0."}};
    for (const auto& [old_name, new_name] : kOld) {
      if (rest.rfind(old_name, 0) == 0) {
        rest = new_name + rest.substr(std::string(old_name).size());
        break;
      }
    }
    const bool projection = rest.rfind("to_q.", 0) == 0 || rest.rfind("to_k.", 0) == 0 || rest.rfind("to_v.", 0) == 0 || rest.rfind("to_out.0.", 0) == 0;
    if (projection && t.dim() == 4 && t.size(2) == 1 && t.size(3) == 1) t = t.reshape({t.size(0), t.size(1)});
    return prefix + rest;
  };
  return o;
}

void load_vae_weights(AutoencoderKLImpl& vae, const TensorMap& weights) { load_state_dict(vae, weights, vae_load_options()); }

AutoencoderKL load_vae(const std::string& config_path, const std::string& weights_path, torch::ScalarType dtype, torch::Device device) {
  AutoencoderKL model = vae_from_config(JsonConfig::load(config_path));
  model->to(device, dtype);
  load_vae_weights(*model, safetensors::load(weights_path));
  model->eval();
  return model;
}

}  // namespace asd::models
