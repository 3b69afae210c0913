#include "pipeline/sd_pipeline.h"

#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/state_dict.h"

namespace fs = std::filesystem;

namespace asd::pipeline {

namespace {

nlohmann::json read_json(const fs::path& path) {
  return JsonConfig::load(path.string()).json();
}

/// The weights file of a component: `<stem>.safetensors`, else `<stem>.<variant>.safetensors`.
fs::path weights_file(const fs::path& dir, const std::string& stem, const std::string& variant) {
  const fs::path plain = dir / (stem + ".safetensors");
  const fs::path fp16 = dir / (stem + ".fp16.safetensors");
  if (!variant.empty()) {
    const fs::path wanted = dir / (stem + "." + variant + ".safetensors");
    if (fs::exists(wanted)) return wanted;
    throw_error(ASD_ERR_IO, "missing weights file '" + wanted.string() + "' (variant '" + variant + "')");
  }
  if (fs::exists(plain)) return plain;
  if (fs::exists(fp16)) return fp16;
  if (fs::exists(dir / (stem + ".bin")) || fs::exists(dir / "pytorch_model.bin")) {
    throw_error(ASD_ERR_UNSUPPORTED, "'" + dir.string() + "' holds only pickle (.bin) weights; convert them to safetensors");
  }
  throw_error(ASD_ERR_IO, "missing weights file '" + plain.string() + "' (nor a .fp16 variant)");
}

std::string dtype_name(torch::ScalarType t) { return t == torch::kFloat16 ? "float16" : t == torch::kBFloat16 ? "bfloat16" : "float32"; }

void write_json(const fs::path& path, const nlohmann::json& j) {
  write_file_atomically(path, [&](std::ostream& out) { out << j.dump(2) << "\n"; });
}

}  // namespace

int64_t SdComponents::latent_channels() const { return vae->config().latent_channels; }

int64_t SdComponents::vae_scale_factor() const { return int64_t{1} << (vae->config().block_out_channels.size() - 1); }

void SdComponents::to(torch::Device d, torch::ScalarType t) {
  unet->to(d, t);
  vae->to(d, t);
  text_encoder->to(d, t);
  device = d;
  dtype = t;
}

SdComponents load_diffusers_folder(const std::string& folder, torch::ScalarType dtype, torch::Device device, const std::string& variant) {
  const fs::path root(folder);
  if (!fs::is_directory(root)) throw_error(ASD_ERR_IO, "model folder '" + folder + "' does not exist");
  if (!fs::exists(root / "model_index.json")) {
    throw_error(ASD_ERR_IO, "'" + folder + "' is not a diffusers folder: missing model_index.json");
  }
  SdComponents c;
  c.source = folder;
  c.unet_config = read_json(root / "unet" / "config.json");
  c.vae_config = read_json(root / "vae" / "config.json");
  c.text_encoder_config = read_json(root / "text_encoder" / "config.json");
  c.scheduler_config = read_json(root / "scheduler" / "scheduler_config.json");

  const JsonConfig unet_json(c.unet_config, (root / "unet" / "config.json").string());
  if (unet_json.get<int64_t>("in_channels", 4) != 9) {
    unet_json.unsupported("in_channels", "an inpainting UNet with 9 input channels (latents, masked-image latents, mask) is required");
  }
  c.unet = models::unet_from_config(unet_json);
  c.vae = models::vae_from_config(JsonConfig(c.vae_config, (root / "vae" / "config.json").string()));
  c.text_encoder = ClipTextModel(ClipTextConfig::from_json(JsonConfig(c.text_encoder_config, (root / "text_encoder" / "config.json").string())));
  c.scheduler = schedulers::DDIMSchedulerConfig::from_json(JsonConfig(c.scheduler_config, (root / "scheduler" / "scheduler_config.json").string()));
  c.scaling_factor = c.vae->scaling_factor();

  load_state_dict(*c.unet, safetensors::load(weights_file(root / "unet", "diffusion_pytorch_model", variant).string()));
  models::load_vae_weights(*c.vae, safetensors::load(weights_file(root / "vae", "diffusion_pytorch_model", variant).string()));
  load_clip_text(*c.text_encoder, safetensors::load(weights_file(root / "text_encoder", "model", variant).string()));
  c.unet->eval();
  c.vae->eval();
  c.text_encoder->eval();
  c.to(device, dtype);
  return c;
}

void save_folder(const SdComponents& c, const std::string& folder, const nlohmann::json& extra_index) {
  const fs::path root(folder);
  for (const char* sub : {"unet", "vae", "text_encoder", "scheduler"}) fs::create_directories(root / sub);
  write_json(root / "unet" / "config.json", c.unet_config);
  nlohmann::json vae_config = c.vae_config;
  vae_config["scaling_factor"] = c.scaling_factor;
  write_json(root / "vae" / "config.json", vae_config);
  write_json(root / "text_encoder" / "config.json", c.text_encoder_config);
  write_json(root / "scheduler" / "scheduler_config.json", c.scheduler_config);
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  safetensors::save((root / "unet" / "diffusion_pytorch_model.safetensors").string(), state_dict(*c.unet), meta);
  safetensors::save((root / "vae" / "diffusion_pytorch_model.safetensors").string(), state_dict(*c.vae), meta);
  safetensors::save((root / "text_encoder" / "model.safetensors").string(), state_dict(*c.text_encoder), meta);
  nlohmann::json index = {{"_class_name", "StableDiffusionInpaintPipeline"},
                          {"unet", {"diffusers", "UNet2DConditionModel"}},
                          {"vae", {"diffusers", "AutoencoderKL"}},
                          {"text_encoder", {"transformers", "CLIPTextModel"}},
                          {"tokenizer", {"transformers", "CLIPTokenizer"}},
                          {"scheduler", {"diffusers", "DDIMScheduler"}},
                          {"torch_dtype", dtype_name(c.dtype)}};
  if (extra_index.is_object()) index.update(extra_index);
  write_json(root / "model_index.json", index);  // written last: its presence marks a complete folder
}

nlohmann::json compact_unet_config() {
  return {{"_class_name", "UNet2DConditionModel"},
          {"sample_size", 32},
          {"in_channels", 9},
          {"out_channels", 4},
          {"block_out_channels", {64, 128, 128}},
          {"layers_per_block", 1},
          {"down_block_types", {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"}},
          {"mid_block_type", "UNetMidBlock2DCrossAttn"},
          {"up_block_types", {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}},
          {"attention_head_dim", 4},  // = number of heads (the SD config trap)
          {"cross_attention_dim", 64},
          {"use_linear_projection", true},
          {"norm_num_groups", 16},
          {"norm_eps", 1e-5},
          {"flip_sin_to_cos", true},
          {"freq_shift", 0},
          {"act_fn", "silu"}};
}

nlohmann::json compact_vae_config() {
  return {{"_class_name", "AutoencoderKL"},
          {"in_channels", 3},
          {"out_channels", 3},
          {"latent_channels", 4},
          {"block_out_channels", {32, 64, 64}},
          {"layers_per_block", 1},
          {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}},
          {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}},
          {"norm_num_groups", 16},
          {"act_fn", "silu"},
          {"sample_size", 128},
          {"scaling_factor", 1.0}};
}

nlohmann::json compact_text_encoder_config() {
  return {{"architectures", {"CLIPTextModel"}}, {"model_type", "clip_text_model"}, {"vocab_size", 49408},
          {"hidden_size", 64}, {"intermediate_size", 256}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"max_position_embeddings", 77}, {"layer_norm_eps", 1e-5},
          {"hidden_act", "quick_gelu"}};
}

nlohmann::json compact_scheduler_config() {
  return {{"_class_name", "DDIMScheduler"}, {"num_train_timesteps", 1000}, {"beta_start", 0.00085}, {"beta_end", 0.012},
          {"beta_schedule", "scaled_linear"}, {"clip_sample", false}, {"set_alpha_to_one", false}, {"steps_offset", 1},
          {"timestep_spacing", "leading"}, {"prediction_type", "epsilon"}};
}

namespace {
/// Components with fresh (seeded) weights built from the four config objects.
SdComponents from_configs(uint64_t seed, std::string source, nlohmann::json unet, nlohmann::json vae, nlohmann::json text_encoder,
                          nlohmann::json scheduler) {
  torch::manual_seed(seed);
  SdComponents c;
  c.source = std::move(source);
  c.unet_config = std::move(unet);
  c.vae_config = std::move(vae);
  c.text_encoder_config = std::move(text_encoder);
  c.scheduler_config = std::move(scheduler);
  c.unet = models::unet_from_config(JsonConfig(c.unet_config, c.source + " unet"));
  c.vae = models::vae_from_config(JsonConfig(c.vae_config, c.source + " vae"));
  c.text_encoder = ClipTextModel(ClipTextConfig::from_json(JsonConfig(c.text_encoder_config, c.source + " text_encoder")));
  c.scheduler = schedulers::DDIMSchedulerConfig::from_json(JsonConfig(c.scheduler_config, c.source + " scheduler"));
  c.scaling_factor = c.vae->scaling_factor();
  c.unet->eval();
  c.vae->eval();
  c.text_encoder->eval();
  return c;
}
}  // namespace

SdComponents compact_preset(uint64_t seed) {
  return from_configs(seed, "compact", compact_unet_config(), compact_vae_config(), compact_text_encoder_config(), compact_scheduler_config());
}

SdComponents sd2_inpainting_random(uint64_t seed) {
  const nlohmann::json unet = {{"_class_name", "UNet2DConditionModel"}, {"sample_size", 64}, {"in_channels", 9}, {"out_channels", 4},
                   {"block_out_channels", {320, 640, 1280, 1280}}, {"layers_per_block", 2},
                   {"down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
                   {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}},
                   {"mid_block_type", "UNetMidBlock2DCrossAttn"}, {"attention_head_dim", {5, 10, 20, 20}},
                   {"cross_attention_dim", 1024}, {"use_linear_projection", true}, {"norm_num_groups", 32}, {"norm_eps", 1e-5},
                   {"flip_sin_to_cos", true}, {"freq_shift", 0}, {"act_fn", "silu"}, {"downsample_padding", 1}};
  const nlohmann::json vae = {{"_class_name", "AutoencoderKL"}, {"in_channels", 3}, {"out_channels", 3}, {"latent_channels", 4},
                  {"block_out_channels", {128, 256, 512, 512}}, {"layers_per_block", 2},
                  {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}},
                  {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}},
                  {"norm_num_groups", 32}, {"act_fn", "silu"}, {"sample_size", 512}, {"scaling_factor", 0.18215}};
  const nlohmann::json text_encoder = {{"architectures", {"CLIPTextModel"}}, {"vocab_size", 49408}, {"hidden_size", 1024},
                           {"intermediate_size", 4096}, {"num_hidden_layers", 23}, {"num_attention_heads", 16},
                           {"max_position_embeddings", 77}, {"layer_norm_eps", 1e-5}, {"hidden_act", "gelu"}};
  return from_configs(seed, "sd2-inpainting (random weights)", unet, vae, text_encoder, compact_scheduler_config());
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace asd::pipeline
