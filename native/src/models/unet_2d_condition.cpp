#include "models/unet_2d_condition.h"

#include "core/error.h"
#include "io/safetensors.h"
#include "io/state_dict.h"

namespace asd::models {

namespace nn = torch::nn;

// ---------------------------------------------------------------------------------------------------
UNet2DConditionConfig unet_config_from_json(const JsonConfig& j) {
  UNet2DConditionConfig c;
  // Known keys whose non-default values change the architecture in ways not implemented here.
  for (const char* key : {"class_embed_type", "num_class_embeds", "addition_embed_type", "addition_time_embed_dim", "time_cond_proj_dim",
                          "encoder_hid_dim", "encoder_hid_dim_type", "time_embedding_act_fn", "timestep_post_act",
                          "projection_class_embeddings_input_dim", "cross_attention_norm"}) {
    if (j.has(key)) j.unsupported(key, "only null is supported");
  }
  j.one_of("resnet_time_scale_shift", "default", {"default"});
  j.one_of("time_embedding_type", "positional", {"positional"});
  j.one_of("attention_type", "default", {"default"});
  j.one_of("act_fn", "silu", {"silu", "swish"});
  j.expect("dual_cross_attention", false);
  j.expect("mid_block_only_cross_attention", false);
  j.expect("class_embeddings_concat", false);
  j.expect("resnet_skip_time_act", false);
  j.expect("conv_in_kernel", 3);
  j.expect("conv_out_kernel", 3);
  if (j.has("resnet_out_scale_factor") && j.get<double>("resnet_out_scale_factor", 1.0) != 1.0) {
    j.unsupported("resnet_out_scale_factor", "only 1.0 is supported");
  }
  if (j.has("dropout") && j.get<double>("dropout", 0.0) != 0.0) j.unsupported("dropout", "only 0.0 is supported");
  if (j.has("only_cross_attention")) {
    const auto& v = j.json().at("only_cross_attention");
    bool any = v.is_boolean() ? v.get<bool>() : true;
    if (v.is_array()) {
      any = false;
      for (const auto& e : v) any = any || !e.is_boolean() || e.get<bool>();
    }
    if (any) j.unsupported("only_cross_attention", "only false is supported");
  }
  // The null-vs-absent distinction matters here: diffusers skips conv_norm_out when norm_num_groups is null.
  if (j.json().contains("norm_num_groups") && j.json().at("norm_num_groups").is_null()) {
    j.unsupported("norm_num_groups", "null (no output norm) is not supported");
  }

  c.sample_size = j.get<int64_t>("sample_size", c.sample_size);
  c.in_channels = j.get<int64_t>("in_channels", c.in_channels);
  c.out_channels = j.get<int64_t>("out_channels", c.out_channels);
  c.center_input_sample = j.get<bool>("center_input_sample", c.center_input_sample);
  c.flip_sin_to_cos = j.get<bool>("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = j.get<double>("freq_shift", c.freq_shift);
  c.down_block_types = j.get<std::vector<std::string>>("down_block_types", c.down_block_types);
  c.up_block_types = j.get<std::vector<std::string>>("up_block_types", c.up_block_types);
  c.block_out_channels = j.get<std::vector<int64_t>>("block_out_channels", c.block_out_channels);
  const size_t n = c.block_out_channels.size();
  if (n == 0 || c.down_block_types.size() != n || c.up_block_types.size() != n) {
    throw_error(ASD_ERR_FORMAT, "config '" + j.source() + "': block_out_channels, down_block_types and up_block_types must have the same non-zero length");
  }
  for (const auto& t : c.down_block_types) {
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D") j.unsupported("down_block_types", "block type '" + t + "' is not implemented");
  }
  for (const auto& t : c.up_block_types) {
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D") j.unsupported("up_block_types", "block type '" + t + "' is not implemented");
  }
  if (j.json().contains("mid_block_type") && j.json().at("mid_block_type").is_null()) {
    c.mid_block_type.clear();
  } else {
    c.mid_block_type = j.one_of("mid_block_type", c.mid_block_type, {"UNetMidBlock2DCrossAttn"});
  }
  c.layers_per_block = j.int_or_list("layers_per_block", 2, n);
  c.downsample_padding = j.get<int64_t>("downsample_padding", c.downsample_padding);
  c.mid_block_scale_factor = j.get<double>("mid_block_scale_factor", c.mid_block_scale_factor);
  c.norm_num_groups = j.get<int64_t>("norm_num_groups", c.norm_num_groups);
  c.norm_eps = j.get<double>("norm_eps", c.norm_eps);
  c.cross_attention_dim = j.int_or_list("cross_attention_dim", 1280, n);
  c.transformer_layers_per_block = j.int_or_list("transformer_layers_per_block", 1, n);
  // TRAP: in SD 1.x/2.x configs `attention_head_dim` is the NUMBER OF HEADS, not the size of a head (a
  // historical misnomer): diffusers 0.21 does `num_attention_heads = num_attention_heads or attention_head_dim`
  // and rejects an explicit num_attention_heads. SD 1.5: 8 heads of 40..160 channels; SD 2: [5,10,20,20].
  if (j.has("num_attention_heads")) {
    j.unsupported("num_attention_heads", "diffusers 0.21 rejects it too; attention_head_dim holds the number of heads");
  }
  c.num_attention_heads = j.int_or_list("attention_head_dim", 8, n);
  c.use_linear_projection = j.get<bool>("use_linear_projection", c.use_linear_projection);
  c.upcast_attention = j.get<bool>("upcast_attention", c.upcast_attention);
  c.time_embedding_dim = j.get<int64_t>("time_embedding_dim", 0);

  for (size_t i = 0; i < n; ++i) {
    const int64_t ch = c.block_out_channels[i];
    if (ch <= 0 || c.layers_per_block[i] <= 0 || c.num_attention_heads[i] <= 0 || c.transformer_layers_per_block[i] <= 0 ||
        ch % c.norm_num_groups != 0 || ch % c.num_attention_heads[i] != 0) {
      throw_error(ASD_ERR_FORMAT, "config '" + j.source() + "': level " + std::to_string(i) + " has " + std::to_string(ch) +
                                      " channels, not a positive multiple of norm_num_groups and of its number of heads");
    }
  }
  if (c.in_channels <= 0 || c.out_channels <= 0) throw_error(ASD_ERR_FORMAT, "config '" + j.source() + "': bad in/out channels");
  return c;
}

// ---------------------------------------------------------------------------------------------------
namespace {
ResnetBlock2D make_resnet(const UNet2DConditionConfig& c, int64_t in, int64_t out, int64_t temb, double scale = 1.0) {
  ResnetBlock2DOptions o;
  o.in_channels = in;
  o.out_channels = out;
  o.temb_channels = temb;
  o.groups = c.norm_num_groups;
  o.eps = c.norm_eps;
  o.output_scale_factor = scale;
  return ResnetBlock2D(o);
}

Transformer2DModel make_transformer(const UNet2DConditionConfig& c, int64_t channels, int64_t heads, int64_t layers, int64_t cross_dim) {
  Transformer2DOptions o;
  o.in_channels = channels;
  o.heads = heads;
  o.dim_head = channels / heads;
  o.num_layers = layers;
  o.cross_attention_dim = cross_dim;
  o.norm_num_groups = c.norm_num_groups;
  o.use_linear_projection = c.use_linear_projection;
  o.upcast_attention = c.upcast_attention;
  return Transformer2DModel(o);
}
}  // namespace

UNetDownBlockImpl::UNetDownBlockImpl(const UNet2DConditionConfig& c, size_t level, int64_t in_channels, int64_t temb_channels,
                                     bool cross_attention, bool add_downsample) {
  const int64_t out = c.block_out_channels[level];
  nn::ModuleList resnets, attentions;
  for (int64_t i = 0; i < c.layers_per_block[level]; ++i) {
    resnets_.push_back(make_resnet(c, i == 0 ? in_channels : out, out, temb_channels));
    resnets->push_back(resnets_.back());
    if (cross_attention) {
      attentions_.push_back(make_transformer(c, out, c.num_attention_heads[level], c.transformer_layers_per_block[level], c.cross_attention_dim[level]));
      attentions->push_back(attentions_.back());
    }
  }
  if (cross_attention) register_module("attentions", attentions);
  register_module("resnets", resnets);
  if (add_downsample) {
    nn::ModuleList down;
    downsampler_ = Downsample2D(out, out, c.downsample_padding);
    down->push_back(downsampler_);
    register_module("downsamplers", down);
  }
}

torch::Tensor UNetDownBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context, std::vector<torch::Tensor>& skips) {
  for (size_t i = 0; i < resnets_.size(); ++i) {
    x = resnets_[i]->forward(x, temb);
    if (!attentions_.empty()) x = attentions_[i]->forward(x, context);
    skips.push_back(x);
  }
  if (downsampler_) {
    x = downsampler_->forward(x);
    skips.push_back(x);
  }
  return x;
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNet2DConditionConfig& c, size_t i, int64_t temb_channels, bool cross_attention, bool add_upsample) {
  const size_t n = c.block_out_channels.size();
  const size_t level = n - 1 - i;  // the level whose per-level settings (reversed lists) this block uses
  const int64_t out = c.block_out_channels[level];
  const int64_t prev_out = c.block_out_channels[std::min(n - 1, level + 1)];
  const int64_t in = c.block_out_channels[level == 0 ? 0 : level - 1];  // reversed_block_out_channels[min(i+1, n-1)]
  const int64_t layers = c.layers_per_block[level] + 1;
  nn::ModuleList resnets, attentions;
  for (int64_t r = 0; r < layers; ++r) {
    const int64_t skip = r == layers - 1 ? in : out;
    const int64_t res_in = r == 0 ? prev_out : out;
    resnets_.push_back(make_resnet(c, res_in + skip, out, temb_channels));
    resnets->push_back(resnets_.back());
    if (cross_attention) {
      attentions_.push_back(make_transformer(c, out, c.num_attention_heads[level], c.transformer_layers_per_block[level], c.cross_attention_dim[level]));
      attentions->push_back(attentions_.back());
    }
  }
  if (cross_attention) register_module("attentions", attentions);
  register_module("resnets", resnets);
  if (add_upsample) {
    nn::ModuleList up;
    upsampler_ = Upsample2D(out, out);
    up->push_back(upsampler_);
    register_module("upsamplers", up);
  }
}

torch::Tensor UNetUpBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context, std::vector<torch::Tensor>& skips,
                                       std::optional<std::vector<int64_t>> upsample_size) {
  for (size_t i = 0; i < resnets_.size(); ++i) {
    x = torch::cat({x, skips.back()}, 1);
    skips.pop_back();
    x = resnets_[i]->forward(x, temb);
    if (!attentions_.empty()) x = attentions_[i]->forward(x, context);
  }
  if (upsampler_) x = upsampler_->forward(x, std::move(upsample_size));
  return x;
}

UNetMidBlock2DCrossAttnImpl::UNetMidBlock2DCrossAttnImpl(const UNet2DConditionConfig& c, int64_t temb_channels) {
  const size_t last = c.block_out_channels.size() - 1;
  const int64_t ch = c.block_out_channels[last];
  nn::ModuleList resnets, attentions;
  resnets_.push_back(make_resnet(c, ch, ch, temb_channels, c.mid_block_scale_factor));
  resnets->push_back(resnets_.back());
  attentions_.push_back(make_transformer(c, ch, c.num_attention_heads[last], c.transformer_layers_per_block[last], c.cross_attention_dim[last]));
  attentions->push_back(attentions_.back());
  resnets_.push_back(make_resnet(c, ch, ch, temb_channels, c.mid_block_scale_factor));
  resnets->push_back(resnets_.back());
  register_module("attentions", attentions);
  register_module("resnets", resnets);
}

torch::Tensor UNetMidBlock2DCrossAttnImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context) {
  x = resnets_[0]->forward(x, temb);
  for (size_t i = 0; i < attentions_.size(); ++i) {
    x = attentions_[i]->forward(x, context);
    x = resnets_[i + 1]->forward(x, temb);
  }
  return x;
}

// ---------------------------------------------------------------------------------------------------
UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNet2DConditionConfig& config) : config_(config) {
  const auto& c = config_;
  const size_t n = c.block_out_channels.size();
  const int64_t ch0 = c.block_out_channels[0];
  const int64_t temb = c.time_embedding_dim > 0 ? c.time_embedding_dim : 4 * ch0;
  conv_in_ = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(c.in_channels, ch0, 3).padding(1)));
  time_embedding_ = register_module("time_embedding", TimestepEmbedding(ch0, temb));

  nn::ModuleList down;
  int64_t out = ch0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = out;
    out = c.block_out_channels[i];
    down_blocks_.emplace_back(c, i, in, temb, c.down_block_types[i] == "CrossAttnDownBlock2D", i + 1 < n);
    down->push_back(down_blocks_.back());
  }
  register_module("down_blocks", down);
  if (!c.mid_block_type.empty()) mid_block_ = register_module("mid_block", UNetMidBlock2DCrossAttn(c, temb));
  nn::ModuleList up;
  for (size_t i = 0; i < n; ++i) {
    up_blocks_.emplace_back(c, i, temb, c.up_block_types[i] == "CrossAttnUpBlock2D", i + 1 < n);
    up->push_back(up_blocks_.back());
  }
  register_module("up_blocks", up);
  conv_norm_out_ = register_module("conv_norm_out", nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, ch0).eps(c.norm_eps)));
  conv_out_ = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(ch0, c.out_channels, 3).padding(1)));
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& encoder_hidden_states) {
  const auto& c = config_;
  require(sample.dim() == 4 && sample.size(1) == c.in_channels,  // per denoising step: format only on failure
          [&] { return "unet: sample must be [B," + std::to_string(c.in_channels) + ",H,W], got " + std::to_string(sample.dim()) + "-D"; });
  const int64_t batch = sample.size(0);
  require(encoder_hidden_states.dim() == 3 && (encoder_hidden_states.size(0) == batch || encoder_hidden_states.size(0) == 1),
          "unet: encoder_hidden_states must be [B,L,D] with the batch of sample, or [1,L,D] shared by the batch");
  require(timestep.defined() && (timestep.numel() == 1 || (timestep.dim() == 1 && timestep.size(0) == batch)),
          "unet: timestep must be a single value or [B]");
  const torch::Tensor t = timestep.reshape({-1}).to(sample.device()).expand({batch});

  // diffusers: upsample to the skip size whenever H or W is not a multiple of 2^(number of upsamplers).
  const int64_t factor = int64_t{1} << (c.block_out_channels.size() - 1);
  const bool forward_upsample_size = sample.size(2) % factor != 0 || sample.size(3) % factor != 0;

  torch::Tensor emb = timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift).to(sample.scalar_type());
  emb = time_embedding_->forward(emb);

  torch::Tensor x = c.center_input_sample ? 2 * sample - 1.0 : sample;
  x = conv_in_->forward(x);
  std::vector<torch::Tensor> skips{x};
  for (auto& block : down_blocks_) x = block->forward(x, emb, encoder_hidden_states, skips);
  if (mid_block_) x = mid_block_->forward(x, emb, encoder_hidden_states);
  for (size_t i = 0; i < up_blocks_.size(); ++i) {
    auto& block = up_blocks_[i];
    std::optional<std::vector<int64_t>> size;
    const size_t remaining = skips.size() - block->num_resnets();
    if (i + 1 < up_blocks_.size() && forward_upsample_size) size = std::vector<int64_t>{skips[remaining - 1].size(2), skips[remaining - 1].size(3)};
    x = block->forward(x, emb, encoder_hidden_states, skips, std::move(size));
  }
  x = conv_out_->forward(torch::silu(normalize(conv_norm_out_, x)));
  return x;
}

// ---------------------------------------------------------------------------------------------------
UNet2DConditionModel unet_from_config(const JsonConfig& json) { return UNet2DConditionModel(unet_config_from_json(json)); }

UNet2DConditionModel load_unet(const std::string& config_path, const std::string& weights_path, torch::ScalarType dtype, torch::Device device) {
  UNet2DConditionModel model = unet_from_config(JsonConfig::load(config_path));
  model->to(device, dtype);
  load_state_dict(*model, safetensors::load(weights_path));
  model->eval();
  return model;
}

}  // namespace asd::models
