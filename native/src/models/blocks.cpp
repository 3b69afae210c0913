#include "models/blocks.h"

#include <cmath>

#include "core/error.h"
#include "models/attention.h"

namespace asd::models {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {
nn::Conv2d conv2d(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad));
}
nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(eps).affine(true));
}
}  // namespace

// ---------------------------------------------------------------------------------------------------
ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetBlock2DOptions& o) : output_scale_factor_(o.output_scale_factor) {
  norm1_ = register_module("norm1", group_norm(o.groups, o.in_channels, o.eps));
  conv1_ = register_module("conv1", conv2d(o.in_channels, o.out_channels, 3, 1, 1));
  if (o.temb_channels > 0) time_emb_proj_ = register_module("time_emb_proj", nn::Linear(o.temb_channels, o.out_channels));
  norm2_ = register_module("norm2", group_norm(o.groups, o.out_channels, o.eps));
  conv2_ = register_module("conv2", conv2d(o.out_channels, o.out_channels, 3, 1, 1));
  if (o.in_channels != o.out_channels) conv_shortcut_ = register_module("conv_shortcut", conv2d(o.in_channels, o.out_channels, 1));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  torch::Tensor h = conv1_->forward(torch::silu(normalize(norm1_, x)));
  if (temb.defined() && time_emb_proj_) {
    const torch::Tensor t = time_emb_proj_->forward(torch::silu(temb));
    h = h + t.unsqueeze(-1).unsqueeze(-1);
  }
  h = conv2_->forward(torch::silu(normalize(norm2_, h)));
  torch::Tensor out = (conv_shortcut_ ? conv_shortcut_->forward(x) : x) + h;
  if (output_scale_factor_ != 1.0) out = out / output_scale_factor_;
  return out;
}

// ---------------------------------------------------------------------------------------------------
AttentionImpl::AttentionImpl(const AttentionOptions& o) : o_(o) {
  const int64_t inner = o.heads * o.dim_head;
  const int64_t ctx = o.cross_attention_dim > 0 ? o.cross_attention_dim : o.query_dim;
  if (o.norm_num_groups > 0) group_norm_ = register_module("group_norm", group_norm(o.norm_num_groups, o.query_dim, o.eps));
  to_q_ = register_module("to_q", nn::Linear(nn::LinearOptions(o.query_dim, inner).bias(o.bias)));
  to_k_ = register_module("to_k", nn::Linear(nn::LinearOptions(ctx, inner).bias(o.bias)));
  to_v_ = register_module("to_v", nn::Linear(nn::LinearOptions(ctx, inner).bias(o.bias)));
  nn::ModuleList to_out;
  to_out_0_ = nn::Linear(nn::LinearOptions(inner, o.query_dim).bias(true));
  to_out->push_back(to_out_0_);
  to_out->push_back(nn::Dropout(0.0));
  register_module("to_out", to_out);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const bool spatial = x.dim() == 4;
  torch::Tensor h = x;
  if (group_norm_) h = normalize(group_norm_, h);
  int64_t b = 0, c = 0, hh = 0, ww = 0;
  if (spatial) {
    b = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3);
    // [B,HW,C], made contiguous once here rather than inside each of the three projections.
    h = h.reshape({b, c, hh * ww}).transpose(1, 2).contiguous();
  }
  const torch::Tensor& src = context.defined() ? context : h;
  const int64_t batch = h.size(0), lq = h.size(1), lk = src.size(1), heads = o_.heads, d = o_.dim_head;
  const bool shared = context.defined() && src.size(0) == 1 && batch > 1;  // see forward's contract
  require(shared || src.size(0) == batch, "attention: context batch must be 1 or the query batch");
  const int64_t n = shared ? 1 : batch, rows = shared ? batch * lq : lq;
  // [N,L,H*D] -> [N,H,L,D] views; a shared context folds the batch into the query rows ([1, B*Lq, H*D]).
  auto by_head = [&](const torch::Tensor& t, int64_t len) { return t.view({n, len, heads, d}).transpose(1, 2); };
  const torch::Tensor q = by_head(to_q_->forward(h), rows);
  const torch::Tensor k = by_head(to_k_->forward(src), lk);
  const torch::Tensor v = by_head(to_v_->forward(src), lk);
  AttentionMath math;
  math.upcast_qk = o_.upcast_attention;
  math.upcast_softmax = o_.upcast_softmax || o_.upcast_attention;
  torch::Tensor out = attend(q, k, v, math);  // [N,H,rows,D]
  out = out.transpose(1, 2).reshape({batch, lq, heads * d});
  out = to_out_0_->forward(out);
  if (spatial) out = out.transpose(1, 2).reshape({b, c, hh, ww});
  if (o_.residual_connection) out = out + x;
  if (o_.rescale_output_factor != 1.0) out = out / o_.rescale_output_factor;
  return out;
}

// ---------------------------------------------------------------------------------------------------
GEGLUImpl::GEGLUImpl(int64_t dim_in, int64_t dim_out) { proj_ = register_module("proj", nn::Linear(dim_in, dim_out * 2)); }

torch::Tensor GEGLUImpl::forward(const torch::Tensor& x) {
  const auto parts = proj_->forward(x).chunk(2, -1);
  return parts[0] * torch::gelu(parts[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  const int64_t inner = dim * mult;
  geglu_ = GEGLU(dim, inner);
  out_ = nn::Linear(inner, dim);
  nn::ModuleList net;
  net->push_back(geglu_);
  net->push_back(nn::Dropout(0.0));
  net->push_back(out_);
  register_module("net", net);
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) { return out_->forward(geglu_->forward(x)); }

// ---------------------------------------------------------------------------------------------------
BasicTransformerBlockImpl::BasicTransformerBlockImpl(const TransformerBlockOptions& o) {
  auto ln = [&] { return nn::LayerNorm(nn::LayerNormOptions({o.dim}).eps(1e-5).elementwise_affine(true)); };
  AttentionOptions a;
  a.query_dim = o.dim;
  a.heads = o.heads;
  a.dim_head = o.dim_head;
  a.upcast_attention = o.upcast_attention;
  norm1_ = register_module("norm1", ln());
  attn1_ = register_module("attn1", Attention(a));
  a.cross_attention_dim = o.cross_attention_dim;
  norm2_ = register_module("norm2", ln());
  attn2_ = register_module("attn2", Attention(a));
  norm3_ = register_module("norm3", ln());
  ff_ = register_module("ff", FeedForward(o.dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(torch::Tensor x, const torch::Tensor& context) {
  x = attn1_->forward(normalize(norm1_, x)) + x;
  x = attn2_->forward(normalize(norm2_, x), context) + x;
  x = ff_->forward(normalize(norm3_, x)) + x;
  return x;
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DOptions& o) : linear_(o.use_linear_projection) {
  const int64_t inner = o.heads * o.dim_head;
  norm_ = register_module("norm", group_norm(o.norm_num_groups, o.in_channels, 1e-6));
  if (linear_) {
    proj_in_linear_ = register_module("proj_in", nn::Linear(o.in_channels, inner));
  } else {
    proj_in_conv_ = register_module("proj_in", conv2d(o.in_channels, inner, 1));
  }
  nn::ModuleList blocks;
  TransformerBlockOptions t;
  t.dim = inner;
  t.heads = o.heads;
  t.dim_head = o.dim_head;
  t.cross_attention_dim = o.cross_attention_dim;
  t.upcast_attention = o.upcast_attention;
  for (int64_t i = 0; i < o.num_layers; ++i) {
    blocks_.emplace_back(t);
    blocks->push_back(blocks_.back());
  }
  register_module("transformer_blocks", blocks);
  if (linear_) {
    proj_out_linear_ = register_module("proj_out", nn::Linear(inner, o.in_channels));
  } else {
    proj_out_conv_ = register_module("proj_out", conv2d(inner, o.in_channels, 1));
  }
}

torch::Tensor Transformer2DModelImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
  torch::Tensor t = normalize(norm_, x);
  int64_t inner = 0;
  if (linear_) {
    inner = t.size(1);
    t = proj_in_linear_->forward(t.permute({0, 2, 3, 1}).reshape({b, h * w, inner}));
    inner = t.size(2);
  } else {
    t = proj_in_conv_->forward(t);
    inner = t.size(1);
    t = t.permute({0, 2, 3, 1}).reshape({b, h * w, inner});
  }
  for (auto& block : blocks_) t = block->forward(t, context);
  if (linear_) {
    t = proj_out_linear_->forward(t);
    t = t.reshape({b, h, w, t.size(2)}).permute({0, 3, 1, 2}).contiguous();
  } else {
    t = t.reshape({b, h, w, inner}).permute({0, 3, 1, 2}).contiguous();
    t = proj_out_conv_->forward(t);
  }
  return t + x;
}

// ---------------------------------------------------------------------------------------------------
Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t out_channels, int64_t padding) : padding_(padding) {
  conv_ = register_module("conv", conv2d(channels, out_channels, 3, 2, padding));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  if (padding_ == 0) return conv_->forward(F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).mode(torch::kConstant).value(0)));
  return conv_->forward(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels, int64_t out_channels) {
  conv_ = register_module("conv", conv2d(channels, out_channels, 3, 1, 1));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x, std::optional<std::vector<int64_t>> output_size) {
  auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
  if (output_size) {
    opts.size(*output_size);
  } else {
    opts.scale_factor(std::vector<double>{2.0, 2.0});
  }
  return conv_->forward(F::interpolate(x, opts));
}

// ---------------------------------------------------------------------------------------------------
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  require(timesteps.dim() == 1, "timestep_embedding: timesteps must be 1-D [B]");
  const int64_t half = dim / 2;
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(timesteps.device());
  torch::Tensor exponent = torch::arange(0, half, f32) * static_cast<float>(-std::log(10000.0));
  exponent = exponent / static_cast<float>(half - freq_shift);
  const torch::Tensor freqs = torch::exp(exponent);
  const torch::Tensor args = timesteps.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  torch::Tensor emb = flip_sin_to_cos ? torch::cat({torch::cos(args), torch::sin(args)}, -1) : torch::cat({torch::sin(args), torch::cos(args)}, -1);
  if (dim % 2 == 1) emb = F::pad(emb, F::PadFuncOptions({0, 1, 0, 0}));
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim) {
  linear_1_ = register_module("linear_1", nn::Linear(in_channels, time_embed_dim));
  linear_2_ = register_module("linear_2", nn::Linear(time_embed_dim, time_embed_dim));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) { return linear_2_->forward(torch::silu(linear_1_->forward(x))); }

}  // namespace asd::models
