// CLIP text encoder with Hugging Face transformers semantics and parameter names (CLIPTextModel,
// transformers/models/clip/modeling_clip.py): the Stable Diffusion `text_encoder`.
//
//   input_ids [B, S] int64 (S <= max_position_embeddings, 77 in SD)
//   -> token_embedding + position_embedding(arange(S))
//   -> num_hidden_layers x pre-LN block:  h += out_proj(causal_softmax_attention(layer_norm1(h)))
//                                          h += fc2(act(fc1(layer_norm2(h))))
//   -> final_layer_norm -> last_hidden_state [B, S, hidden_size]
//
// Parameter names are the checkpoint names ("text_model.encoder.layers.0.self_attn.q_proj.weight"), so
// asd::load_state_dict is a lookup. Traps, one comment each:
//  - checkpoints saved by older transformers carry the buffer "text_model.embeddings.position_ids"; this
//    module has no such buffer (positions are arange(S)), load_clip_text skips that key.
//  - SD 1.x (OpenAI CLIP ViT-L/14) uses hidden_act "quick_gelu" = x * sigmoid(1.702 x); SD 2.x (OpenCLIP
//    ViT-H/14) uses "gelu" = exact erf GELU, not the tanh approximation.
//  - SD 2.x pipelines take last_hidden_state of the full model as well (the penultimate-layer trick lives in
//    the converted checkpoint, which has 23 layers); nothing to do here.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "io/json_config.h"
#include "io/tensor_map.h"

namespace asd {

/// transformers CLIPTextConfig, the keys this engine reads (defaults are transformers' own).
struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  double layer_norm_eps = 1e-5;
  /// "quick_gelu" (default) or "gelu" (exact). Anything else: ASD_ERR_UNSUPPORTED naming `hidden_act`.
  std::string hidden_act = "quick_gelu";

  /// Reads a transformers config.json. ASD_ERR_UNSUPPORTED for an unknown hidden_act, ASD_ERR_FORMAT for
  /// wrong types or inconsistent sizes (hidden_size not divisible by num_attention_heads).
  static ClipTextConfig from_json(const JsonConfig& config);
  static ClipTextConfig load(const std::string& config_json_path);
};

/// One pre-LN transformer block: text_model.encoder.layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1,
/// mlp.{fc1,fc2}, layer_norm2}.
class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderLayerImpl(const ClipTextConfig& config);
  /// h [B, S, D] -> [B, S, D]; the self-attention is causal (models/attention.h's kernel).
  torch::Tensor forward(const torch::Tensor& h);

 private:
  int64_t num_heads_;
  int64_t head_dim_;
  bool quick_gelu_;
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, out_proj_{nullptr};
  torch::nn::LayerNorm layer_norm1_{nullptr}, layer_norm2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

/// transformers CLIPTextModel. Parameters live under "text_model." (the CLIPTextTransformer).
class ClipTextModelImpl : public torch::nn::Module {
 public:
  explicit ClipTextModelImpl(const ClipTextConfig& config);

  /// input_ids [B, S] int64 token ids in [0, vocab_size), S <= max_position_embeddings.
  /// Returns last_hidden_state [B, S, hidden_size] (after final_layer_norm), in the module's dtype/device.
  /// ASD_ERR_INVALID_ARGUMENT for a wrong rank, dtype or length.
  torch::Tensor forward(const torch::Tensor& input_ids);

  const ClipTextConfig& config() const { return config_; }

 private:
  ClipTextConfig config_;
  torch::nn::Embedding token_embedding_{nullptr};
  torch::nn::Embedding position_embedding_{nullptr};
  torch::nn::ModuleList layers_{nullptr};          // registered: text_model.encoder.layers.N
  std::vector<ClipEncoderLayer> layer_handles_;     // the same modules, typed, for forward()
  torch::nn::LayerNorm final_layer_norm_{nullptr};
};
TORCH_MODULE(ClipTextModel);

/// Loads a CLIPTextModel checkpoint (e.g. text_encoder/model.safetensors) into `model` with
/// asd::load_state_dict, skipping the "text_model.embeddings.position_ids" buffer of older checkpoints.
/// Other extra keys (text_projection of CLIPTextModelWithProjection) are ignored; missing keys and shape
/// mismatches are errors as in load_state_dict.
void load_clip_text(ClipTextModelImpl& model, const TensorMap& weights);

}  // namespace asd
