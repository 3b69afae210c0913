#include "models/clip_text.h"

#include "core/error.h"
#include "io/state_dict.h"
#include "models/attention.h"

namespace asd {

ClipTextConfig ClipTextConfig::from_json(const JsonConfig& config) {
  ClipTextConfig c;
  c.vocab_size = config.get<int64_t>("vocab_size", c.vocab_size);
  c.hidden_size = config.get<int64_t>("hidden_size", c.hidden_size);
  c.intermediate_size = config.get<int64_t>("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = config.get<int64_t>("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = config.get<int64_t>("num_attention_heads", c.num_attention_heads);
  c.max_position_embeddings = config.get<int64_t>("max_position_embeddings", c.max_position_embeddings);
  c.layer_norm_eps = config.get<double>("layer_norm_eps", c.layer_norm_eps);
  c.hidden_act = config.one_of("hidden_act", c.hidden_act, {"quick_gelu", "gelu"});
  const auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) throw_error(ASD_ERR_FORMAT, "config '" + config.source() + "': '" + key + "' must be positive, got " + std::to_string(v));
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("max_position_embeddings", c.max_position_embeddings);
  if (c.hidden_size % c.num_attention_heads != 0) {
    throw_error(ASD_ERR_FORMAT, "config '" + config.source() + "': hidden_size " + std::to_string(c.hidden_size) +
                                    " is not divisible by num_attention_heads " + std::to_string(c.num_attention_heads));
  }
  return c;
}

ClipTextConfig ClipTextConfig::load(const std::string& config_json_path) { return from_json(JsonConfig::load(config_json_path)); }

namespace {
torch::nn::LayerNorm make_layer_norm(const ClipTextConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}
}  // namespace

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& c)
    : num_heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads), quick_gelu_(c.hidden_act == "quick_gelu") {
  // Containers that exist only to give the parameters their checkpoint names (self_attn.*, mlp.*).
  auto self_attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  q_proj_ = self_attn->register_module("q_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  k_proj_ = self_attn->register_module("k_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  v_proj_ = self_attn->register_module("v_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  out_proj_ = self_attn->register_module("out_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  layer_norm1_ = register_module("layer_norm1", make_layer_norm(c));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1_ = mlp->register_module("fc1", torch::nn::Linear(c.hidden_size, c.intermediate_size));
  fc2_ = mlp->register_module("fc2", torch::nn::Linear(c.intermediate_size, c.hidden_size));
  layer_norm2_ = register_module("layer_norm2", make_layer_norm(c));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& h) {
  const int64_t B = h.size(0), S = h.size(1), D = h.size(2);
  // Causal self-attention (CLIPAttention): position i attends to j <= i.
  torch::Tensor x = layer_norm1_(h);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, S, num_heads_, head_dim_}).transpose(1, 2); };  // [B,H,S,d]
  models::AttentionMath math;
  math.causal = true;
  x = models::attend(heads(q_proj_(x)), heads(k_proj_(x)), heads(v_proj_(x)), math).transpose(1, 2).reshape({B, S, D});
  torch::Tensor out = h + out_proj_(x);
  // MLP (CLIPMLP).
  x = fc1_(layer_norm2_(out));
  x = quick_gelu_ ? x * torch::sigmoid(1.702 * x) : torch::gelu(x);
  return out + fc2_(x);
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& config) : config_(config) {
  auto text_model = register_module("text_model", std::make_shared<torch::nn::Module>());
  auto embeddings = text_model->register_module("embeddings", std::make_shared<torch::nn::Module>());
  token_embedding_ = embeddings->register_module("token_embedding", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  position_embedding_ =
      embeddings->register_module("position_embedding", torch::nn::Embedding(config.max_position_embeddings, config.hidden_size));
  auto encoder = text_model->register_module("encoder", std::make_shared<torch::nn::Module>());
  layers_ = encoder->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    layer_handles_.push_back(ClipEncoderLayer(config));
    layers_->push_back(layer_handles_.back());
  }
  final_layer_norm_ = text_model->register_module("final_layer_norm", make_layer_norm(config));
}

torch::Tensor ClipTextModelImpl::forward(const torch::Tensor& input_ids) {
  require(input_ids.dim() == 2, "CLIPTextModel: input_ids must be [batch, seq_len], got rank " + std::to_string(input_ids.dim()));
  require(input_ids.scalar_type() == torch::kInt64, "CLIPTextModel: input_ids must be int64");
  const int64_t S = input_ids.size(1);
  require(S >= 1 && S <= config_.max_position_embeddings, "CLIPTextModel: seq_len " + std::to_string(S) + " is outside [1, " +
                                                              std::to_string(config_.max_position_embeddings) + "]");
  const torch::Tensor& table = token_embedding_->weight;
  const torch::Tensor ids = input_ids.to(table.device());
  const torch::Tensor positions = torch::arange(S, torch::TensorOptions().dtype(torch::kInt64).device(table.device()));
  torch::Tensor h = token_embedding_(ids) + position_embedding_(positions).unsqueeze(0);
  for (auto& layer : layer_handles_) h = layer->forward(h);
  return final_layer_norm_(h);
}

void load_clip_text(ClipTextModelImpl& model, const TensorMap& weights) {
  LoadOptions options;
  options.remap = [](const std::string& key, torch::Tensor&) -> std::string {
    static const std::string kPositionIds = "text_model.embeddings.position_ids";
    return key == kPositionIds ? std::string() : key;
  };
  load_state_dict(model, weights, options);
}

}  // namespace asd
