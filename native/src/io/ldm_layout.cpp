#include "io/ldm_layout.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"

namespace asd::ldm {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

/// Splits "a.b.c" into {"a", "b", "c"}.
std::vector<std::string> split(const std::string& key) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(key);
  while (std::getline(in, part, '.')) parts.push_back(part);
  return parts;
}

std::string join(const std::vector<std::string>& parts, size_t from) {
  std::string out;
  for (size_t i = from; i < parts.size(); ++i) out += (i > from ? "." : "") + parts[i];
  return out;
}

int64_t to_index(const std::string& s, const std::string& key) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) {
    throw_error(ASD_ERR_INTERNAL, "unexpected module key '" + key + "'");
  }
  return std::stoll(s);
}

[[noreturn]] void no_mapping(const std::string& key) {
  throw_error(ASD_ERR_UNSUPPORTED, "the module weight '" + key + "' has no counterpart in the original Stable Diffusion layout");
}

/// diffusers ResnetBlock2D names -> LDM ResBlock names (UNet).
std::string unet_resnet(const std::string& rest) {
  static const std::pair<const char*, const char*> kNames[] = {{"norm1.", "in_layers.0."},   {"conv1.", "in_layers.2."},
                                                               {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
                                                               {"conv2.", "out_layers.3."},  {"conv_shortcut.", "skip_connection."}};
  for (const auto& [d, l] : kNames) {
    if (starts_with(rest, d)) return l + rest.substr(std::string(d).size());
  }
  return rest;
}

std::string vae_resnet(const std::string& rest) {
  return starts_with(rest, "conv_shortcut.") ? "nin_shortcut." + rest.substr(14) : rest;
}

std::string shape_str(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

std::string family_name(Family f) { return f == Family::kSd2 ? "SD 2.x" : "SD 1.x"; }

Layout Layout::from_configs(Family family, const nlohmann::json& unet, const nlohmann::json& vae, const nlohmann::json& text_encoder) {
  Layout l;
  l.family = family;
  const nlohmann::json& lpb = unet.contains("layers_per_block") ? unet.at("layers_per_block") : nlohmann::json(2);
  if (lpb.is_array()) {
    for (const auto& v : lpb) {
      if (v != lpb.at(0)) throw_error(ASD_ERR_UNSUPPORTED, "single-file checkpoints need the same layers_per_block at every UNet level");
    }
    l.unet_layers_per_block = lpb.empty() ? 2 : lpb.at(0).get<int64_t>();
  } else {
    l.unet_layers_per_block = lpb.get<int64_t>();
  }
  for (const auto& t : unet.value("up_block_types", std::vector<std::string>{})) l.up_block_has_attention.push_back(t.find("CrossAttn") != std::string::npos);
  l.vae_levels = static_cast<int64_t>(vae.value("block_out_channels", std::vector<int64_t>{}).size());
  l.text_layers = text_encoder.value("num_hidden_layers", int64_t{12});
  return l;
}

Source unet_source(const std::string& key, const Layout& layout) {
  const auto p = split(key);
  const int64_t per = layout.unet_layers_per_block + 1;  // LDM blocks per level: the resnets (+ a down/upsampler)
  Source s;
  auto out = [&](const std::string& k) {
    s.key = kUnetPrefix + k;
    return s;
  };
  if (p.size() >= 3 && p[0] == "time_embedding") {
    if (p[1] == "linear_1") return out("time_embed.0." + join(p, 2));
    if (p[1] == "linear_2") return out("time_embed.2." + join(p, 2));
  }
  if (p.size() == 2 && p[0] == "conv_in") return out("input_blocks.0.0." + p[1]);
  if (p.size() == 2 && p[0] == "conv_norm_out") return out("out.0." + p[1]);
  if (p.size() == 2 && p[0] == "conv_out") return out("out.2." + p[1]);
  if (p.size() >= 5 && p[0] == "down_blocks") {
    const int64_t b = to_index(p[1], key), j = to_index(p[3], key);
    if (p[2] == "resnets") return out("input_blocks." + std::to_string(1 + b * per + j) + ".0." + unet_resnet(join(p, 4)));
    if (p[2] == "attentions") return out("input_blocks." + std::to_string(1 + b * per + j) + ".1." + join(p, 4));
    if (p[2] == "downsamplers" && p[4] == "conv") return out("input_blocks." + std::to_string((b + 1) * per) + ".0.op." + join(p, 5));
  }
  if (p.size() >= 4 && p[0] == "mid_block") {
    const int64_t j = to_index(p[2], key);
    if (p[1] == "resnets" && j <= 1) return out("middle_block." + std::to_string(2 * j) + "." + unet_resnet(join(p, 3)));
    if (p[1] == "attentions" && j == 0) return out("middle_block.1." + join(p, 3));
  }
  if (p.size() >= 5 && p[0] == "up_blocks") {
    const int64_t b = to_index(p[1], key), j = to_index(p[3], key);
    if (p[2] == "resnets") return out("output_blocks." + std::to_string(b * per + j) + ".0." + unet_resnet(join(p, 4)));
    if (p[2] == "attentions") return out("output_blocks." + std::to_string(b * per + j) + ".1." + join(p, 4));
    if (p[2] == "upsamplers" && p[4] == "conv") {
      const bool attention = static_cast<size_t>(b) < layout.up_block_has_attention.size() && layout.up_block_has_attention[static_cast<size_t>(b)];
      return out("output_blocks." + std::to_string(b * per + per - 1) + (attention ? ".2.conv." : ".1.conv.") + join(p, 5));
    }
  }
  no_mapping(key);
}

Source vae_source(const std::string& key, const Layout& layout) {
  const auto p = split(key);
  Source s;
  auto out = [&](const std::string& k) {
    s.key = kVaePrefix + k;
    return s;
  };
  if (p.size() == 2 && (p[0] == "quant_conv" || p[0] == "post_quant_conv")) return out(key);
  if (p.size() >= 3 && (p[0] == "encoder" || p[0] == "decoder")) {
    const std::string& coder = p[0];
    if (p.size() == 3 && (p[1] == "conv_in" || p[1] == "conv_out")) return out(key);
    if (p.size() == 3 && p[1] == "conv_norm_out") return out(coder + ".norm_out." + p[2]);
    if (p.size() >= 5 && p[1] == "mid_block") {
      const int64_t j = to_index(p[3], key);
      if (p[2] == "resnets" && j <= 1) return out(coder + ".mid.block_" + std::to_string(j + 1) + "." + vae_resnet(join(p, 4)));
      if (p[2] == "attentions" && j == 0 && p.size() >= 6) {
        const std::string rest = join(p, 4);
        static const std::pair<const char*, const char*> kNames[] = {
            {"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."}};
        for (const auto& [d, l] : kNames) {
          if (!starts_with(rest, d)) continue;
          const std::string leaf = rest.substr(std::string(d).size());
          if (leaf == "weight" && std::string(d) != "group_norm.") s.op = Source::Op::kSqueeze1x1;
          return out(coder + ".mid.attn_1." + l + leaf);
        }
      }
    }
    if (p.size() >= 6 && (p[1] == "down_blocks" || p[1] == "up_blocks")) {
      int64_t level = to_index(p[2], key);
      const std::string group = p[1] == "down_blocks" ? ".down." : ".up.";
      if (p[1] == "up_blocks") level = (layout.vae_decoder_top >= 0 ? layout.vae_decoder_top : layout.vae_levels - 1) - level;  // stored bottom-up
      const std::string base = coder + group + std::to_string(level);
      if (p[3] == "resnets") return out(base + ".block." + p[4] + "." + vae_resnet(join(p, 5)));
      if ((p[3] == "downsamplers" || p[3] == "upsamplers") && p[5] == "conv") {
        return out(base + (p[3] == "downsamplers" ? ".downsample.conv." : ".upsample.conv.") + join(p, 6));
      }
    }
  }
  no_mapping(key);
}

Source text_source(const std::string& key, const Layout& layout) {
  Source s;
  if (layout.family == Family::kSd1) {
    s.key = kClipPrefix + key;
    return s;
  }
  const auto p = split(key);
  auto out = [&](const std::string& k) {
    s.key = kOpenClipPrefix + k;
    return s;
  };
  if (key == "text_model.embeddings.token_embedding.weight") return out("token_embedding.weight");
  if (key == "text_model.embeddings.position_embedding.weight") return out("positional_embedding");
  if (p.size() == 3 && p[0] == "text_model" && p[1] == "final_layer_norm") return out("ln_final." + p[2]);
  if (p.size() >= 6 && p[0] == "text_model" && p[1] == "encoder" && p[2] == "layers") {
    const std::string block = "transformer.resblocks." + p[3] + ".";
    const std::string rest = join(p, 4);
    static const std::pair<const char*, const char*> kNames[] = {{"layer_norm1.", "ln_1."}, {"layer_norm2.", "ln_2."}, {"mlp.fc1.", "mlp.c_fc."},
                                                                 {"mlp.fc2.", "mlp.c_proj."}, {"self_attn.out_proj.", "attn.out_proj."}};
    for (const auto& [d, l] : kNames) {
      if (starts_with(rest, d)) return out(block + l + rest.substr(std::string(d).size()));
    }
    static const char* kQkv[] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
    for (int i = 0; i < 3; ++i) {
      if (!starts_with(rest, kQkv[i])) continue;
      s.op = Source::Op::kChunk;
      s.part = i;
      return out(block + "attn.in_proj_" + rest.substr(std::string(kQkv[i]).size()));
    }
  }
  no_mapping(key);
}

torch::Tensor apply(const Source& source, const torch::Tensor& stored, const std::string& file) {
  switch (source.op) {
    case Source::Op::kSame:
      return stored;
    case Source::Op::kSqueeze1x1:
      if (stored.dim() == 2) return stored;  // some conversions store the linear form already
      if (stored.dim() != 4 || stored.size(2) != 1 || stored.size(3) != 1) {
        throw_error(ASD_ERR_FORMAT, "'" + file + "': weight '" + source.key + "' has shape " + shape_str(stored.sizes()) +
                                        ", expected a 1x1 convolution [C, C, 1, 1]");
      }
      return stored.select(3, 0).select(2, 0);
    case Source::Op::kChunk:
      if (stored.dim() < 1 || stored.size(0) % 3 != 0) {
        throw_error(ASD_ERR_FORMAT, "'" + file + "': weight '" + source.key + "' has shape " + shape_str(stored.sizes()) +
                                        ", expected q, k and v stacked along the first dimension (a multiple of 3)");
      }
      return stored.narrow(0, source.part * (stored.size(0) / 3), stored.size(0) / 3);
  }
  return stored;
}

bool is_skipped(const std::string& key, const Layout& layout) {
  if (!starts_with(key, kUnetPrefix) && !starts_with(key, kVaePrefix) && !starts_with(key, "cond_stage_model.")) return true;
  if (key == kClipPrefix + "text_model.embeddings.position_ids") return true;
  if (key == kOpenClipPrefix + "text_projection" || key == kOpenClipPrefix + "logit_scale" || key == kOpenClipPrefix + "attn_mask") return true;
  const std::string blocks = kOpenClipPrefix + "transformer.resblocks.";
  if (layout.family == Family::kSd2 && starts_with(key, blocks)) {
    const std::string rest = key.substr(blocks.size());
    const size_t dot = rest.find('.');
    const std::string index = rest.substr(0, dot);
    if (!index.empty() && index.size() < 9 && index.find_first_not_of("0123456789") == std::string::npos) return std::stoll(index) >= layout.text_layers;
  }
  return false;
}

int64_t decoder_top_in(const TensorMap& file) {
  const std::string prefix = kVaePrefix + "decoder.up.";
  int64_t top = -1;
  for (const std::string& k : file.names()) {
    if (!starts_with(k, prefix)) continue;
    const std::string rest = k.substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string::npos || dot > 6 || rest.substr(0, dot).find_first_not_of("0123456789") != std::string::npos) continue;
    top = std::max<int64_t>(top, std::stoll(rest.substr(0, dot)));
  }
  return top;
}

Family detect_family(const TensorMap& file) {
  bool unet = false, vae = false, clip = false, open_clip = false;
  for (const std::string& k : file.names()) {
    unet = unet || starts_with(k, kUnetPrefix);
    vae = vae || starts_with(k, kVaePrefix);
    clip = clip || starts_with(k, kClipPrefix);
    open_clip = open_clip || starts_with(k, kOpenClipPrefix);
  }
  const std::string where = "'" + file.source() + "'";
  if (!unet) throw_error(ASD_ERR_FORMAT, where + " has no UNet weights ('" + kUnetPrefix + "*'): not a Stable Diffusion single-file checkpoint");
  if (!vae) throw_error(ASD_ERR_FORMAT, where + " has no VAE weights ('" + kVaePrefix + "*'): a single-file checkpoint without its autoencoder is not supported");
  if (!clip && !open_clip) {
    throw_error(ASD_ERR_FORMAT, where + " has no text-encoder weights ('" + kClipPrefix + "*' for SD 1.x, '" + kOpenClipPrefix + "*' for SD 2.x)");
  }
  if (clip && open_clip) throw_error(ASD_ERR_FORMAT, where + " holds both SD 1.x and SD 2.x text-encoder weights");
  return open_clip ? Family::kSd2 : Family::kSd1;
}

Configs detect_configs(const TensorMap& file, Family family) {
  const std::string where = "'" + file.source() + "'";
  auto shape = [&](const std::string& key) -> std::vector<int64_t> {
    const torch::Tensor* t = file.find(key);
    if (t == nullptr) throw_error(ASD_ERR_NOT_FOUND, where + ": missing weight '" + key + "' (needed to read the architecture)");
    return t->sizes().vec();
  };
  auto has = [&](const std::string& key) { return file.contains(key); };
  // Indices N of keys "<prefix>N.<suffix>".
  auto indices = [&](const std::string& prefix, const std::string& suffix) {
    std::set<int64_t> out;
    for (const std::string& k : file.names()) {
      if (!starts_with(k, prefix)) continue;
      const std::string rest = k.substr(prefix.size());
      const size_t dot = rest.find('.');
      if (dot == std::string::npos || dot == 0 || dot > 6 || rest.substr(0, dot).find_first_not_of("0123456789") != std::string::npos) continue;
      if (suffix.empty() || rest.compare(dot + 1, std::string::npos, suffix) == 0) out.insert(std::stoll(rest.substr(0, dot)));
    }
    return out;
  };
  Configs c;

  // ---- UNet
  const std::string u = kUnetPrefix;
  if (has(u + "label_emb.0.0.weight") || has(u + "label_emb.weight")) {
    throw_error(ASD_ERR_UNSUPPORTED, where + ": a UNet with class or size embeddings (SDXL, the x4 upscaler) is not an SD 1.x/2.x inpainting model");
  }
  const auto conv_in = shape(u + "input_blocks.0.0.weight");  // [C0, in, 3, 3]
  const std::set<int64_t> inputs = indices(u + "input_blocks.", "");
  const std::set<int64_t> downs = indices(u + "input_blocks.", "0.op.weight");
  int64_t per = 0, levels = 0;
  if (downs.empty()) {
    levels = 1;
    per = *inputs.rbegin() + 1;
  } else {
    per = *downs.begin();
    levels = static_cast<int64_t>(downs.size()) + 1;
  }
  if (per < 2 || *inputs.rbegin() != levels * per - 1) {
    throw_error(ASD_ERR_FORMAT, where + ": the UNet's input blocks (0.." + std::to_string(*inputs.rbegin()) + ") do not form " +
                                    std::to_string(levels) + " levels of equal depth");
  }
  const int64_t layers = per - 1;
  std::vector<int64_t> widths;
  std::vector<std::string> down_types, up_types;
  std::string attn_probe;
  for (int64_t b = 0; b < levels; ++b) {
    const std::string block = u + "input_blocks." + std::to_string(1 + b * per);
    widths.push_back(shape(block + ".0.in_layers.2.weight")[0]);
    const bool attention = has(block + ".1.proj_in.weight");
    if (attention && attn_probe.empty()) attn_probe = block + ".1.";
    down_types.push_back(attention ? "CrossAttnDownBlock2D" : "DownBlock2D");
  }
  for (int64_t b = 0; b < levels; ++b) {
    up_types.push_back(has(u + "output_blocks." + std::to_string(b * per) + ".1.proj_in.weight") ? "CrossAttnUpBlock2D" : "UpBlock2D");
  }
  if (!has(u + "middle_block.1.proj_in.weight")) throw_error(ASD_ERR_UNSUPPORTED, where + ": a UNet without a cross-attention middle block");
  if (attn_probe.empty()) attn_probe = u + "middle_block.1.";
  const auto proj_in = shape(attn_probe + "proj_in.weight");
  const auto to_k = shape(attn_probe + "transformer_blocks.0.attn2.to_k.weight");  // [C, context]
  const int64_t depth = static_cast<int64_t>(indices(attn_probe + "transformer_blocks.", "norm1.weight").size());
  nlohmann::json heads;
  if (family == Family::kSd1) {
    heads = 8;  // SD 1.x: 8 heads at every level (diffusers' config: attention_head_dim 8 = the head count)
  } else {
    heads = nlohmann::json::array();  // SD 2.x: head dimension 64, so the head count grows with the width
    for (int64_t w : widths) {
      if (w % 64 != 0) throw_error(ASD_ERR_UNSUPPORTED, where + ": UNet width " + std::to_string(w) + " is not a multiple of the SD 2.x head dimension 64; pass --model-config");
      heads.push_back(w / 64);
    }
  }
  const auto time_embed = shape(u + "time_embed.0.weight");  // [4 C0, C0]
  c.unet = {{"_class_name", "UNet2DConditionModel"},
            {"sample_size", 64},
            {"in_channels", conv_in[1]},
            {"out_channels", shape(u + "out.2.weight")[0]},
            {"block_out_channels", widths},
            {"layers_per_block", layers},
            {"down_block_types", down_types},
            {"mid_block_type", "UNetMidBlock2DCrossAttn"},
            {"up_block_types", std::vector<std::string>(up_types.begin(), up_types.end())},
            {"attention_head_dim", heads},
            {"cross_attention_dim", to_k[1]},
            {"transformer_layers_per_block", std::max<int64_t>(depth, 1)},
            {"use_linear_projection", proj_in.size() == 2},
            {"upcast_attention", false},
            {"norm_num_groups", 32},
            {"norm_eps", 1e-5},
            {"flip_sin_to_cos", true},
            {"freq_shift", 0},
            {"act_fn", "silu"},
            {"downsample_padding", 1}};
  if (time_embed[0] != 4 * widths[0]) c.unet["time_embedding_dim"] = time_embed[0];

  // ---- VAE
  const std::string v = kVaePrefix;
  const int64_t vae_levels = static_cast<int64_t>(indices(v + "encoder.down.", "block.0.conv1.weight").size());
  const int64_t vae_layers = static_cast<int64_t>(indices(v + "encoder.down.0.block.", "conv1.weight").size());
  if (vae_levels == 0 || vae_layers == 0) throw_error(ASD_ERR_NOT_FOUND, where + ": missing weight '" + v + "encoder.down.0.block.0.conv1.weight'");
  std::vector<int64_t> vae_widths;
  for (int64_t i = 0; i < vae_levels; ++i) vae_widths.push_back(shape(v + "encoder.down." + std::to_string(i) + ".block.0.conv2.weight")[0]);
  c.vae = {{"_class_name", "AutoencoderKL"},
           {"in_channels", shape(v + "encoder.conv_in.weight")[1]},
           {"out_channels", shape(v + "decoder.conv_out.weight")[0]},
           {"latent_channels", shape(v + "decoder.conv_in.weight")[1]},
           {"block_out_channels", vae_widths},
           {"layers_per_block", vae_layers},
           {"down_block_types", std::vector<std::string>(static_cast<size_t>(vae_levels), "DownEncoderBlock2D")},
           {"up_block_types", std::vector<std::string>(static_cast<size_t>(vae_levels), "UpDecoderBlock2D")},
           {"norm_num_groups", 32},
           {"act_fn", "silu"},
           {"sample_size", 512},
           {"scaling_factor", 0.18215}};

  // ---- text encoder
  std::vector<int64_t> token, position, fc1;
  int64_t text_layers = 0;
  if (family == Family::kSd1) {
    const std::string t = kClipPrefix + "text_model.";
    token = shape(t + "embeddings.token_embedding.weight");
    position = shape(t + "embeddings.position_embedding.weight");
    fc1 = shape(t + "encoder.layers.0.mlp.fc1.weight");
    text_layers = static_cast<int64_t>(indices(t + "encoder.layers.", "layer_norm1.weight").size());
  } else {
    const std::string t = kOpenClipPrefix;
    token = shape(t + "token_embedding.weight");
    position = shape(t + "positional_embedding");
    fc1 = shape(t + "transformer.resblocks.0.mlp.c_fc.weight");
    // SD 2.x conditions on the penultimate layer: the last residual block is not used.
    text_layers = static_cast<int64_t>(indices(t + "transformer.resblocks.", "ln_1.weight").size()) - 1;
    if (text_layers < 1) throw_error(ASD_ERR_FORMAT, where + ": an OpenCLIP text encoder needs at least 2 residual blocks (the last is unused)");
  }
  const int64_t width = token[1];
  if (width % 64 != 0) throw_error(ASD_ERR_UNSUPPORTED, where + ": text-encoder width " + std::to_string(width) + " is not a multiple of the head dimension 64; pass --model-config");
  c.text_encoder = {{"architectures", {"CLIPTextModel"}},
                    {"model_type", "clip_text_model"},
                    {"vocab_size", token[0]},
                    {"hidden_size", width},
                    {"intermediate_size", fc1[0]},
                    {"num_hidden_layers", text_layers},
                    {"num_attention_heads", width / 64},
                    {"max_position_embeddings", position[0]},
                    {"layer_norm_eps", 1e-5},
                    {"hidden_act", family == Family::kSd1 ? "quick_gelu" : "gelu"}};
  return c;
}

TensorMap to_ldm(const TensorMap& unet, const TensorMap& vae, const TensorMap& text_encoder, const Layout& layout) {
  TensorMap out;
  std::map<std::string, std::vector<torch::Tensor>> chunks;  // fused OpenCLIP projections, by file key
  auto add = [&](const TensorMap& m, Source (*source)(const std::string&, const Layout&)) {
    for (size_t i = 0; i < m.size(); ++i) {
      const Source s = source(m.names()[i], layout);
      const torch::Tensor& t = m.tensor(i);
      if (s.op == Source::Op::kSame) {
        out.set(s.key, t);
      } else if (s.op == Source::Op::kSqueeze1x1) {
        out.set(s.key, t.reshape({t.size(0), t.size(1), 1, 1}));
      } else {
        auto& parts = chunks[s.key];
        parts.resize(3);
        parts[static_cast<size_t>(s.part)] = t;
        if (parts[0].defined() && parts[1].defined() && parts[2].defined()) out.set(s.key, torch::cat(parts, 0));
      }
    }
  };
  add(unet, &unet_source);
  add(vae, &vae_source);
  add(text_encoder, &text_source);
  return out;
}

}  // namespace asd::ldm
