// Building blocks shared by the UNet and the VAE, with diffusers 0.21 semantics (diffusers/models/
// resnet.py, attention.py, attention_processor.py, transformer_2d.py, embeddings.py). Every module
// registers its children under the diffusers state-dict names, so `load_state_dict` is a lookup.
// Shapes: images are [B,C,H,W], token sequences [B,L,D].
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <torch/torch.h>

namespace asd::models {

/// Runs a GroupNorm or LayerNorm in its parameters' dtype. Under mixed-precision autocast, convolutions and
/// matmuls hand norms bf16/fp16 activations while the norm keeps fp32 weights; CUDA autocast runs norms in
/// fp32 itself, libtorch 1.13's CPU autocast does not, so the cast is explicit here (a no-op otherwise).
template <typename Norm>
torch::Tensor normalize(Norm& norm, const torch::Tensor& x) {
  const torch::Tensor& w = norm->weight;
  return w.defined() && w.scalar_type() != x.scalar_type() ? norm->forward(x.to(w.scalar_type())) : norm->forward(x);
}

// ---------------------------------------------------------------------------------------------------
/// ResnetBlock2D (time_embedding_norm "default", pre_norm, SiLU):
///   h = conv1(silu(norm1(x))); h += time_emb_proj(silu(temb))[:, :, None, None] (if temb);
///   h = conv2(silu(norm2(h))); out = (shortcut(x) + h) / output_scale_factor,
/// shortcut = conv_shortcut (1x1) when in_channels != out_channels, identity otherwise.
struct ResnetBlock2DOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t temb_channels = 0;  ///< 0: no time embedding (VAE)
  int64_t groups = 32;
  double eps = 1e-6;
  double output_scale_factor = 1.0;
};

class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(const ResnetBlock2DOptions& o);
  /// x [B,in,H,W]; temb [B,temb_channels] or undefined -> [B,out,H,W].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

 private:
  double output_scale_factor_;
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv_shortcut_{nullptr};
  torch::nn::Linear time_emb_proj_{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

// ---------------------------------------------------------------------------------------------------
/// diffusers `Attention`: multi-head softmax(Q K^T / sqrt(dim_head)) V through models/attention.h's kernel (the fused
/// at::scaled_dot_product_attention of AttnProcessor2_0 under libtorch >= 2.0, AttnProcessor's math otherwise).
/// Children: to_q, to_k, to_v, to_out.0 and, for the VAE form, group_norm.
struct AttentionOptions {
  int64_t query_dim = 0;
  int64_t cross_attention_dim = 0;  ///< 0: self-attention (keys/values from the query input)
  int64_t heads = 8;
  int64_t dim_head = 64;
  bool bias = false;                ///< bias of to_q/to_k/to_v (to_out.0 always has one)
  bool upcast_attention = false;    ///< compute Q K^T and the softmax in float32 (SD 2.1 fp16)
  bool upcast_softmax = false;      ///< compute the softmax in float32
  int64_t norm_num_groups = 0;      ///< >0: group_norm over channels before the projections (VAE)
  double eps = 1e-5;                ///< group_norm epsilon
  bool residual_connection = false; ///< add the input back (VAE)
  double rescale_output_factor = 1.0;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& o);
  /// x: [B,L,query_dim] or, for the VAE form, [B,C,H,W] (attends over the H*W positions and returns
  /// [B,C,H,W]). context: [B,Lc,cross_attention_dim] for cross-attention, undefined for self-attention.
  /// A context of batch 1 with B > 1 is shared by the whole batch (one prompt for every mask of an image): its
  /// keys and values are projected once, and each head attends with one [B*L, D] x [D, Lc] product instead of
  /// B small ones; every query row sees the same keys, so the arithmetic per row is unchanged.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});

 private:
  AttentionOptions o_;
  torch::nn::Linear to_q_{nullptr}, to_k_{nullptr}, to_v_{nullptr}, to_out_0_{nullptr};
  torch::nn::GroupNorm group_norm_{nullptr};
};
TORCH_MODULE(Attention);

// ---------------------------------------------------------------------------------------------------
/// GEGLU: proj(x) = [hidden | gate]; out = hidden * gelu(gate) (exact erf GELU).
class GEGLUImpl : public torch::nn::Module {
 public:
  GEGLUImpl(int64_t dim_in, int64_t dim_out);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Linear proj_{nullptr};
};
TORCH_MODULE(GEGLU);

/// FeedForward(dim, mult=4, activation "geglu"): net.0 = GEGLU(dim, 4*dim), net.1 = dropout, net.2 = Linear.
class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(int64_t dim, int64_t mult = 4);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  GEGLU geglu_{nullptr};
  torch::nn::Linear out_{nullptr};
};
TORCH_MODULE(FeedForward);

// ---------------------------------------------------------------------------------------------------
/// BasicTransformerBlock (norm_type "layer_norm", LayerNorm eps 1e-5):
///   x += attn1(norm1(x)); x += attn2(norm2(x), context); x += ff(norm3(x)).
struct TransformerBlockOptions {
  int64_t dim = 0;
  int64_t heads = 8;
  int64_t dim_head = 64;
  int64_t cross_attention_dim = 0;
  bool upcast_attention = false;
};

class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  explicit BasicTransformerBlockImpl(const TransformerBlockOptions& o);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& context);

 private:
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr}, norm3_{nullptr};
  Attention attn1_{nullptr}, attn2_{nullptr};
  FeedForward ff_{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

/// Transformer2DModel (continuous input): GroupNorm(eps 1e-6) -> proj_in -> blocks -> proj_out -> + input.
/// proj_in/proj_out are 1x1 convs (SD 1.x) or, with use_linear_projection (SD 2.x), linear layers applied
/// to the [B,H*W,C] tokens.
struct Transformer2DOptions {
  int64_t in_channels = 0;
  int64_t heads = 8;
  int64_t dim_head = 64;
  int64_t num_layers = 1;
  int64_t cross_attention_dim = 0;
  int64_t norm_num_groups = 32;
  bool use_linear_projection = false;
  bool upcast_attention = false;
};

class Transformer2DModelImpl : public torch::nn::Module {
 public:
  explicit Transformer2DModelImpl(const Transformer2DOptions& o);
  /// x [B,C,H,W], context [B,L,D] -> [B,C,H,W].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

 private:
  bool linear_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d proj_in_conv_{nullptr}, proj_out_conv_{nullptr};
  torch::nn::Linear proj_in_linear_{nullptr}, proj_out_linear_{nullptr};
  std::vector<BasicTransformerBlock> blocks_;
};
TORCH_MODULE(Transformer2DModel);

// ---------------------------------------------------------------------------------------------------
/// Downsample2D with a conv: 3x3 stride 2 with `padding`; when padding == 0 the input is first padded
/// (left 0, right 1, top 0, bottom 1), as diffusers does (the VAE encoder).
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(int64_t channels, int64_t out_channels, int64_t padding);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  int64_t padding_;
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Downsample2D);

/// Upsample2D with a conv: nearest x2 (or to `output_size` when given, for odd skip sizes) then 3x3 conv.
class Upsample2DImpl : public torch::nn::Module {
 public:
  Upsample2DImpl(int64_t channels, int64_t out_channels);
  torch::Tensor forward(const torch::Tensor& x, std::optional<std::vector<int64_t>> output_size = std::nullopt);

 private:
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Upsample2D);

// ---------------------------------------------------------------------------------------------------
/// Sinusoidal timestep embedding (diffusers get_timestep_embedding, max_period 10000):
///   freq_i = exp(-ln(10000) * i / (half - freq_shift)), i < half = dim/2; emb = [sin(t f), cos(t f)]
///   (swapped to [cos, sin] with flip_sin_to_cos); zero-padded by one column when dim is odd.
/// timesteps: [B] of any numeric type -> [B,dim] float32.
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift);

/// TimestepEmbedding: linear_2(silu(linear_1(x))).
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Linear linear_1_{nullptr}, linear_2_{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace asd::models
