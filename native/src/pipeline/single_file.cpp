#include "pipeline/single_file.h"

#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/atomic_dir.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "io/state_dict.h"
#include "io/weight_file.h"
#include "schedulers/noise_schedule.h"

namespace fs = std::filesystem;

namespace asd::pipeline {

namespace {

std::string shape_str(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string dtype_label(torch::ScalarType t) {
  return t == torch::kFloat16 ? "fp16" : t == torch::kBFloat16 ? "bf16" : t == torch::kFloat64 ? "fp64" : t == torch::kFloat32 ? "fp32" : c10::toString(t);
}

using SourceFn = ldm::Source (*)(const std::string&, const ldm::Layout&);

/// Copies every parameter and buffer of `module` from its file key (one copy, converting to the parameter's dtype),
/// releasing the file's pages after each. Errors name the file key and the module key.
void copy_component(torch::nn::Module& module, const char* component, const WeightFile& file, SourceFn source, const ldm::Layout& layout,
                    std::set<std::string>& used) {
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& key, torch::Tensor target) {
    const ldm::Source s = source(key, layout);
    const torch::Tensor* stored = file.tensors().find(s.key);
    if (stored == nullptr) {
      throw_error(ASD_ERR_NOT_FOUND, "'" + file.path() + "': missing weight '" + s.key + "' (the " + component + "'s '" + key +
                                         "', expected shape " + shape_str(target.sizes()) + ")");
    }
    const torch::Tensor t = ldm::apply(s, *stored, file.path());
    if (t.sizes() != target.sizes()) {
      throw_error(ASD_ERR_FORMAT, "'" + file.path() + "': weight '" + s.key + "' has shape " + shape_str(stored->sizes()) + ", expected " +
                                      shape_str(target.sizes()) + " (the " + component + "'s '" + key + "')");
    }
    if (!c10::isFloatingType(t.scalar_type())) {
      throw_error(ASD_ERR_FORMAT, "'" + file.path() + "': weight '" + s.key + "' has the non-floating type " + c10::toString(t.scalar_type()));
    }
    target.copy_(t);
    file.release(*stored);
    used.insert(s.key);
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) copy(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) copy(b.key(), b.value());
}

nlohmann::json read_config(const fs::path& dir, const char* component, const char* name) {
  const fs::path p = dir / component / name;
  if (!fs::exists(p)) throw_error(ASD_ERR_IO, "--model-config '" + dir.string() + "' has no " + component + "/" + name);
  return JsonConfig::load(p.string()).json();
}

}  // namespace

bool is_single_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

SdComponents load_single_file(const std::string& path, const SingleFileOptions& options, std::optional<torch::ScalarType> dtype,
                              torch::Device device) {
  if (dtype && *dtype != torch::kFloat32 && *dtype != torch::kFloat16 && *dtype != torch::kBFloat16) {
    throw_error(ASD_ERR_INVALID_ARGUMENT, "model dtype must be F32, F16 or BF16");
  }
  const std::shared_ptr<WeightFile> file = WeightFile::open(path);
  const TensorMap& weights = file->tensors();
  const ldm::Family family = ldm::detect_family(weights);

  SdComponents c;
  c.source = path;
  if (options.config_dir.empty()) {
    ldm::Configs detected = ldm::detect_configs(weights, family);
    c.unet_config = std::move(detected.unet);
    c.vae_config = std::move(detected.vae);
    c.text_encoder_config = std::move(detected.text_encoder);
    c.scheduler_config = compact_scheduler_config();
  } else {
    const fs::path dir(options.config_dir);
    if (!fs::is_directory(dir)) throw_error(ASD_ERR_IO, "--model-config '" + options.config_dir + "' is not a folder");
    c.unet_config = read_config(dir, "unet", "config.json");
    c.vae_config = read_config(dir, "vae", "config.json");
    c.text_encoder_config = read_config(dir, "text_encoder", "config.json");
    c.scheduler_config = fs::exists(dir / "scheduler" / "scheduler_config.json") ? read_config(dir, "scheduler", "scheduler_config.json")
                                                                                  : compact_scheduler_config();
  }
  if (!options.prediction_type.empty()) c.scheduler_config["prediction_type"] = options.prediction_type;

  const std::string where = "'" + path + "'";
  const JsonConfig unet_json(c.unet_config, where + " (UNet configuration)");
  if (unet_json.get<int64_t>("in_channels", 4) != 9) {
    unet_json.unsupported("in_channels", "an inpainting UNet with 9 input channels (latents, masked-image latents, mask) is required");
  }
  c.unet = models::unet_from_config(unet_json);
  c.vae = models::vae_from_config(JsonConfig(c.vae_config, where + " (VAE configuration)"));
  c.text_encoder = ClipTextModel(ClipTextConfig::from_json(JsonConfig(c.text_encoder_config, where + " (text encoder configuration)")));
  c.scheduler = schedulers::DDIMSchedulerConfig::from_json(JsonConfig(c.scheduler_config, where + " (scheduler configuration)"));
  c.scaling_factor = c.vae->scaling_factor();

  // The file's dtype is its UNet's; the modules take the target dtype before the copy, so each weight is converted
  // once, from the file's pages straight into its parameter.
  ldm::Layout layout = ldm::Layout::from_configs(family, c.unet_config, c.vae_config, c.text_encoder_config);
  layout.vae_decoder_top = ldm::decoder_top_in(weights);
  const torch::Tensor* probe = weights.find(ldm::unet_source("conv_in.weight", layout).key);
  const torch::ScalarType file_dtype = probe != nullptr ? probe->scalar_type() : torch::kFloat32;
  const torch::ScalarType target = dtype ? *dtype : (c10::isFloatingType(file_dtype) && file_dtype != torch::kFloat64 ? file_dtype : torch::kFloat32);
  c.unet->to(target);
  c.vae->to(target);
  c.text_encoder->to(target);
  c.dtype = target;

  std::set<std::string> used;
  copy_component(*c.unet, "UNet", *file, &ldm::unet_source, layout, used);
  copy_component(*c.vae, "VAE", *file, &ldm::vae_source, layout, used);
  copy_component(*c.text_encoder, "text encoder", *file, &ldm::text_source, layout, used);
  int64_t skipped = 0;
  for (const std::string& key : weights.names()) {
    if (used.count(key) != 0) continue;
    if (!ldm::is_skipped(key, layout)) {
      throw_error(ASD_ERR_FORMAT, where + ": unexpected weight '" + key + "': the " + ldm::family_name(family) +
                                      " architecture read from the file has no place for it (pass --model-config for another architecture)");
    }
    ++skipped;
  }
  c.unet->eval();
  c.vae->eval();
  c.text_encoder->eval();
  c.to(device, target);

  const bool inpainting = unet_json.get<int64_t>("in_channels", 4) == 9;
  std::ostringstream description;
  description << ldm::family_name(family) << (inpainting ? " inpainting" : "") << ", UNet " << std::llround(parameter_count(*c.unet) / 1e6)
              << " M parameters, " << dtype_label(file_dtype);
  c.single_file = {{"family", ldm::family_name(family)},
                   {"description", description.str()},
                   {"file_dtype", dtype_label(file_dtype)},
                   {"format", file->format() == WeightFile::Format::kTorchZip ? "ckpt" : "safetensors"},
                   {"tokenizer_pad_token", family == ldm::Family::kSd2 ? "!" : "<|endoftext|>"},
                   {"skipped_keys", skipped},
                   {"model_config", options.config_dir}};
  return c;
}

void save_single_file(const SdComponents& c, const std::string& path, ldm::Family family) {
  const ldm::Layout layout = ldm::Layout::from_configs(family, c.unet_config, c.vae_config, c.text_encoder_config);
  TensorMap out = ldm::to_ldm(state_dict(*c.unet), state_dict(*c.vae), state_dict(*c.text_encoder), layout);
  if (family == ldm::Family::kSd2) {
    // OpenCLIP's last residual block (unused: SD 2.x conditions on the penultimate layer), its projection and scale.
    const std::string last = ldm::kOpenClipPrefix + "transformer.resblocks." + std::to_string(layout.text_layers - 1) + ".";
    const std::string extra = ldm::kOpenClipPrefix + "transformer.resblocks." + std::to_string(layout.text_layers) + ".";
    std::vector<std::pair<std::string, torch::Tensor>> copies;
    for (size_t i = 0; i < out.size(); ++i) {
      if (out.names()[i].rfind(last, 0) == 0) copies.emplace_back(extra + out.names()[i].substr(last.size()), out.tensor(i).clone());
    }
    for (auto& [k, t] : copies) out.set(k, t);
    const int64_t width = c.text_encoder->config().hidden_size;
    out.set(ldm::kOpenClipPrefix + "text_projection", torch::eye(width, torch::TensorOptions().dtype(c.dtype)));
    out.set(ldm::kOpenClipPrefix + "logit_scale", torch::full({}, std::log(1 / 0.07), torch::TensorOptions().dtype(c.dtype)));
  }
  const schedulers::NoiseSchedule schedule(c.scheduler.schedule);
  out.set("betas", schedule.betas());
  out.set("alphas_cumprod", schedule.alphas_cumprod());
  out.set("model_ema.decay", torch::full({}, 0.9999, torch::kFloat32));
  out.set("model_ema.num_updates", torch::zeros({}, torch::kInt32));
  safetensors::save(path, out);
}

std::string convert_single_file(const std::string& path, const SingleFileOptions& options, const std::string& out_dir,
                                const std::string& tokenizer_dir) {
  const fs::path out(out_dir);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) throw_error(ASD_ERR_INVALID_ARGUMENT, "--out '" + out_dir + "' exists and is not a folder");
    const bool empty = fs::directory_iterator(out) == fs::directory_iterator();
    bool ours = false;
    if (!empty && fs::exists(out / "model_index.json")) {
      try {
        ours = JsonConfig::load((out / "model_index.json").string()).json().contains("_anomalysd_converted_from");
      } catch (const Error&) {
        ours = false;
      }
    }
    if (!empty && !ours) {
      throw_error(ASD_ERR_INVALID_ARGUMENT, "--out '" + out_dir + "' is not empty and is not a folder written by convert; refusing to replace it");
    }
  }
  fs::path tokenizer = tokenizer_dir.empty() && !options.config_dir.empty() ? fs::path(options.config_dir) / "tokenizer" : fs::path(tokenizer_dir);
  if (tokenizer.empty() || !fs::exists(tokenizer / "vocab.json") || !fs::exists(tokenizer / "merges.txt")) {
    throw_error(ASD_ERR_IO, "convert needs the CLIP tokenizer files (vocab.json, merges.txt)" +
                                (tokenizer.empty() ? std::string() : " and '" + tokenizer.string() + "' does not hold them") +
                                ": pass --tokenizer DIR, or --model-config DIR with a tokenizer/ folder");
  }
  const SdComponents c = load_single_file(path, options, std::nullopt, torch::kCPU);
  write_directory_atomically(out, "converted model", [&](const fs::path& staging) {
    save_folder(c, staging.string(),
                {{"_anomalysd_converted_from", fs::absolute(path).string()}, {"_anomalysd_detected", c.single_file.value("description", "")}});
    fs::create_directories(staging / "tokenizer");
    for (const char* name : {"vocab.json", "merges.txt"}) {
      fs::copy_file(tokenizer / name, staging / "tokenizer" / name);
      // The copy keeps the source's mode: a read-only source would give a folder its owner cannot update in place.
      fs::permissions(staging / "tokenizer" / name, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
    }
    const std::string pad = c.single_file.value("tokenizer_pad_token", "<|endoftext|>");
    const nlohmann::json config = {{"tokenizer_class", "CLIPTokenizer"}, {"model_max_length", c.text_encoder->config().max_position_embeddings},
                                   {"bos_token", "<|startoftext|>"},      {"eos_token", "<|endoftext|>"},
                                   {"unk_token", "<|endoftext|>"},        {"pad_token", pad}};
    write_file_atomically(staging / "tokenizer" / "tokenizer_config.json", [&](std::ostream& o) { o << config.dump(2) << "\n"; });
    const nlohmann::json special = {{"bos_token", "<|startoftext|>"}, {"eos_token", "<|endoftext|>"}, {"unk_token", "<|endoftext|>"}, {"pad_token", pad}};
    write_file_atomically(staging / "tokenizer" / "special_tokens_map.json", [&](std::ostream& o) { o << special.dump(2) << "\n"; });
  });
  return c.single_file.value("description", "");
}

}  // namespace asd::pipeline
