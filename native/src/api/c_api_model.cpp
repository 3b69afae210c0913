// C API: inpainting models, checkpoints, prompt conditions, batched inpainting, fine-tuning.
#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "api/guard.h"
#include "api/handles.h"
#include "pipeline/checkpoint.h"
#include "models/unet_flops.h"
#include "pipeline/inpaint.h"
#include "pipeline/single_file.h"

namespace asd::api {

DeviceName parse_device_name(const char* device) {
  const std::string d = device == nullptr || *device == '\0' ? "cpu" : device;
  if (d == "cpu") return {false, 0};
  if (d == "cuda") return {true, 0};
  const std::string prefix = "cuda:";
  if (d.rfind(prefix, 0) == 0 && d.size() > prefix.size() && d.size() <= prefix.size() + 4 &&
      std::all_of(d.begin() + static_cast<std::ptrdiff_t>(prefix.size()), d.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return {true, std::stoi(d.substr(prefix.size()))};
  }
  throw_error(ASD_ERR_INVALID_ARGUMENT, "unknown device '" + d + "' (use cpu, cuda or cuda:N with N a device number)");
}

torch::Device parse_device(const char* device) {
  const DeviceName name = parse_device_name(device);
  if (!name.cuda) return torch::kCPU;
  const std::string d = device;
  if (!torch::cuda::is_available()) throw_error(ASD_ERR_UNSUPPORTED, "device '" + d + "' requested but no CUDA device is available");
  if (name.index >= static_cast<int>(torch::cuda::device_count())) throw_error(ASD_ERR_NOT_FOUND, "no CUDA device " + std::to_string(name.index));
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(name.index));
}

void release(asd_model* model) {
  if (model != nullptr && model->references.fetch_sub(1) == 1) delete model;
}

namespace {
template <typename T>
torch::Tensor copy_buffer(const T* data, const std::vector<int64_t>& shape, const char* what, torch::ScalarType type) {
  not_null(data, what);
  int64_t count = 1;
  for (int64_t d : shape) {
    require(d > 0, [&] { return std::string(what) + ": every dimension must be > 0"; });
    require(count <= (int64_t{1} << 40) / d, [&] { return std::string(what) + ": the shape is too large"; });
    count *= d;
  }
  return torch::from_blob(const_cast<T*>(data), shape, type).clone();
}
}  // namespace

torch::Tensor float_buffer(const float* data, const std::vector<int64_t>& shape, const char* what) {
  return copy_buffer(data, shape, what, torch::kFloat32);
}

torch::Tensor int64_buffer(const int64_t* data, const std::vector<int64_t>& shape, const char* what) {
  return copy_buffer(data, shape, what, torch::kInt64);
}

pipeline::WindowOptions to_window_options(const asd_inpaint_options& options) {
  require(std::isfinite(options.window_context), "window_context must be finite (< 0 = full image)");
  require(options.inpaint_size >= 0, "inpaint_size must be >= 0 (0 = the image's size)");
  pipeline::WindowOptions w;
  w.context = options.window_context;
  w.inpaint_size = options.inpaint_size;
  require(options.distance_at_inpaint_size == 0 || options.distance_at_inpaint_size == 1, "distance_at_inpaint_size must be 0 or 1");
  w.distance_at_inpaint_size = options.distance_at_inpaint_size != 0;
  return w;
}

pipeline::InpaintCondition inpaint_condition(const asd_model& model, const std::string& category, const asd_inpaint_options& options) {
  auto it = model.conditions.find(category);
  if (it == model.conditions.end()) throw_error(ASD_ERR_NOT_FOUND, "unknown category '" + category + "': call asd_model_set_category first");
  pipeline::InpaintCondition condition;
  condition.text_embedding = it->second;
  condition.token_ids = model.prompt_ids.at(category);
  condition.naive = options.naive != 0;
  return condition;
}

pipeline::InpaintOptions to_inpaint_options(const asd_inpaint_options& options) {
  pipeline::InpaintOptions o;
  o.num_inference_steps = options.num_inference_steps;
  o.noise_strength = options.noise_strength;
  o.batch_size = options.batch_size;
  o.seed = options.seed;
  return o;
}

}  // namespace asd::api

asd_trainer::~asd_trainer() {
  unet.reset();  // the finetuners refer to the model's components: gone before the model may be
  decoder.reset();
  asd::api::release(model);
}

using asd::api::not_null;
namespace pl = asd::pipeline;

namespace {

nlohmann::json parse_object(const char* json, const char* what) {
  if (json == nullptr) return nlohmann::json::object();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    asd::throw_error(ASD_ERR_INVALID_ARGUMENT, std::string(what) + " is not valid JSON: " + e.what());
  }
  asd::require(j.is_object(), std::string(what) + " must be a JSON object");
  return j;
}


torch::ScalarType model_dtype(asd_dtype dtype) {
  const auto t = asd::api::to_torch_dtype(dtype == ASD_DTYPE_AUTO ? ASD_DTYPE_F32 : dtype);
  asd::require(*t == torch::kFloat32 || *t == torch::kFloat16 || *t == torch::kBFloat16, "model dtype must be F32, F16 or BF16");
  return *t;
}

pl::FinetuneOptions finetune_options(const asd_trainer_options& t, double* beta) {
  auto check = [](bool ok, const char* field, double value) {
    if (!ok) asd::throw_error(ASD_ERR_INVALID_ARGUMENT, std::string("trainer options: ") + field + " = " + std::to_string(value) + " is out of range");
  };
  check(t.batch_size >= 1, "batch_size (>= 1)", static_cast<double>(t.batch_size));
  check(t.gradient_accumulation >= 1, "gradient_accumulation (>= 1)", static_cast<double>(t.gradient_accumulation));
  check(t.learning_rate > 0 && std::isfinite(t.learning_rate), "learning_rate (> 0)", t.learning_rate);
  check(t.beta >= 0 && std::isfinite(t.beta), "beta (>= 0)", t.beta);
  check(t.mixed_precision >= ASD_MIXED_PRECISION_NO && t.mixed_precision <= ASD_MIXED_PRECISION_FP16, "mixed_precision (0 no, 1 bf16, 2 fp16)",
        t.mixed_precision);
  check(t.augment_brightness >= 0 && t.augment_contrast >= 0 && t.augment_contrast < 1, "augment_brightness (>= 0) / augment_contrast ([0, 1))",
        t.augment_contrast);
  check(t.augment_scale_min > 0 && t.augment_scale_min <= t.augment_scale_max, "augment_scale_min (0 < min <= max)", t.augment_scale_min);
  check(t.augment_rotation_degrees >= 0 && t.augment_rotation_degrees <= 180, "augment_rotation_degrees ([0, 180])", t.augment_rotation_degrees);
  check(std::isfinite(t.window_context), "window_context (finite; < 0 = full)", t.window_context);
  check(t.inpaint_size >= 0, "inpaint_size (>= 0)", static_cast<double>(t.inpaint_size));
  pl::FinetuneOptions o;
  o.batch_size = t.batch_size;
  o.gradient_accumulation = t.gradient_accumulation;
  o.learning_rate = t.learning_rate;
  o.seed = t.seed;
  o.mixed_precision = t.mixed_precision == ASD_MIXED_PRECISION_BF16   ? asd::MixedPrecision::kBF16
                      : t.mixed_precision == ASD_MIXED_PRECISION_FP16 ? asd::MixedPrecision::kFP16
                                                                      : asd::MixedPrecision::kNone;
  if (t.iou_thresholds != nullptr) {
    check(t.num_iou_thresholds >= 1, "num_iou_thresholds (>= 1)", static_cast<double>(t.num_iou_thresholds));
    o.masks.gammas.assign(t.iou_thresholds, t.iou_thresholds + t.num_iou_thresholds);
    for (double g : o.masks.gammas) check(g >= 0 && g < 1, "iou_thresholds (each in [0, 1))", g);
  }
  o.augment.brightness = t.augment_brightness;
  o.augment.contrast = t.augment_contrast;
  o.augment.scale_min = t.augment_scale_min;
  o.augment.scale_max = t.augment_scale_max;
  o.augment.rotation_degrees = t.augment_rotation_degrees;
  o.windows.context = t.window_context;
  o.windows.inpaint_size = t.inpaint_size;
  *beta = t.beta;
  return o;
}

asd_trainer_options default_trainer_options() {
  const pl::FinetuneOptions d;
  asd_trainer_options t{};
  t.batch_size = d.batch_size;
  t.gradient_accumulation = d.gradient_accumulation;
  t.learning_rate = d.learning_rate;
  t.seed = d.seed;
  t.beta = 0.1;
  t.mixed_precision = ASD_MIXED_PRECISION_NO;
  t.iou_thresholds = nullptr;
  t.num_iou_thresholds = 0;
  t.augment_brightness = d.augment.brightness;
  t.augment_contrast = d.augment.contrast;
  t.augment_scale_min = d.augment.scale_min;
  t.augment_scale_max = d.augment.scale_max;
  t.augment_rotation_degrees = d.augment.rotation_degrees;
  t.window_context = d.windows.context;
  t.inpaint_size = d.windows.inpaint_size;
  return t;
}

pl::SingleFileOptions single_file_options(const asd_single_file_options* options) {
  pl::SingleFileOptions o;
  if (options == nullptr) return o;
  if (options->model_config != nullptr) o.config_dir = options->model_config;
  if (options->prediction_type != nullptr) {
    o.prediction_type = options->prediction_type;
    asd::require(o.prediction_type == "epsilon" || o.prediction_type == "v_prediction" || o.prediction_type == "sample",
                 "prediction_type '" + o.prediction_type + "' must be epsilon, v_prediction or sample");
  }
  return o;
}

std::string dtype_string(torch::ScalarType t) { return t == torch::kFloat16 ? "F16" : t == torch::kBFloat16 ? "BF16" : "F32"; }

}  // namespace

extern "C" {

ASD_API asd_status asd_model_create_compact(uint64_t seed, const char* device, asd_model** out_model) {
  return asd_model_create_preset("compact", seed, device, ASD_DTYPE_F32, out_model);
}

ASD_API asd_status asd_model_create_preset(const char* name, uint64_t seed, const char* device, asd_dtype dtype, asd_model** out_model) {
  return ASD_GUARD({
    not_null(out_model, "out_model");
    const std::string preset = not_null(name, "name");
    auto m = std::make_unique<asd_model>();
    if (preset == "compact") {
      m->components = pl::compact_preset(seed);
    } else if (preset == "sd2-inpainting") {
      m->components = pl::sd2_inpainting_random(seed);
    } else {
      asd::throw_error(ASD_ERR_NOT_FOUND, "unknown preset '" + preset + "' (compact, sd2-inpainting)");
    }
    m->components.to(asd::api::parse_device(device), model_dtype(dtype));
    *out_model = m.release();
  });
}

ASD_API asd_status asd_model_load(const char* folder, const char* device, asd_dtype dtype, asd_model** out_model) {
  return ASD_GUARD({
    not_null(out_model, "out_model");
    const std::string dir = not_null(folder, "folder");
    auto m = std::make_unique<asd_model>();
    if (pl::is_single_file(dir)) {
      m->components = pl::load_single_file(dir, {}, model_dtype(dtype), asd::api::parse_device(device));
      *out_model = m.release();
      return;
    }
    nlohmann::json manifest;
    if (pl::is_checkpoint(dir)) manifest = pl::read_checkpoint_manifest(dir);
    m->components = pl::load_diffusers_folder(dir, model_dtype(dtype), asd::api::parse_device(device));
    if (!manifest.is_null()) {
      pl::check_architecture(manifest, pl::architecture_fingerprint(m->components), dir);
      m->metadata = manifest.value("metadata", nlohmann::json::object());
      m->training = manifest.value("training", nlohmann::json::object());
      m->components.source = manifest.value("model_source", dir);
      const std::string banks = (std::filesystem::path(dir) / "prototype_banks.safetensors").string();
      if (std::filesystem::exists(banks)) {
        m->bank = std::make_unique<asd::PrototypeBank>(asd::PrototypeBank::load(banks, m->components.device));
        m->views = m->bank->options().views();
      }
    }
    *out_model = m.release();
  });
}

ASD_API asd_status asd_single_file_options_default(asd_single_file_options* out_options) {
  return ASD_GUARD({ *not_null(out_options, "out_options") = asd_single_file_options{nullptr, nullptr, nullptr}; });
}

ASD_API asd_status asd_model_load_single_file(const char* path, const asd_single_file_options* options, const char* device, asd_dtype dtype,
                                              asd_model** out_model) {
  return ASD_GUARD({
    not_null(out_model, "out_model");
    const std::string file = not_null(path, "path");
    auto m = std::make_unique<asd_model>();
    const std::optional<torch::ScalarType> target = dtype == ASD_DTYPE_AUTO ? std::nullopt : std::optional<torch::ScalarType>(model_dtype(dtype));
    m->components = pl::load_single_file(file, single_file_options(options), target, asd::api::parse_device(device));
    *out_model = m.release();
  });
}

ASD_API asd_status asd_convert_single_file(const char* path, const asd_single_file_options* options, const char* out_folder) {
  return ASD_GUARD({
    const std::string file = not_null(path, "path");
    const std::string out = not_null(out_folder, "out_folder");
    pl::convert_single_file(file, single_file_options(options), out, options != nullptr && options->tokenizer != nullptr ? options->tokenizer : "");
  });
}

ASD_API asd_status asd_model_save_single_file(const asd_model* model, const char* path, int32_t sd_version) {
  return ASD_GUARD({
    not_null(model, "model");
    const std::string file = not_null(path, "path");
    asd::require(sd_version == 1 || sd_version == 2, "sd_version must be 1 (OpenAI CLIP text-encoder names) or 2 (OpenCLIP names)");
    pl::save_single_file(model->components, file, sd_version == 2 ? asd::ldm::Family::kSd2 : asd::ldm::Family::kSd1);
  });
}

ASD_API asd_status asd_model_save(const asd_model* model, const char* folder, const char* metadata_json, const asd_trainer* unet_trainer) {
  return ASD_GUARD({
    not_null(model, "model");
    const std::string dir = not_null(folder, "folder");
    const nlohmann::json metadata = parse_object(metadata_json, "metadata_json");
    nlohmann::json training = model->training;
    if (unet_trainer != nullptr) {
      asd::require(unet_trainer->model == model, "unet_trainer belongs to another model");
      asd::require(unet_trainer->kind == "unet", "unet_trainer must be a \"unet\" trainer");
      training["unet_steps"] = unet_trainer->unet ? unet_trainer->unet->steps_done() : unet_trainer->resume_steps;
    }
    pl::save_checkpoint(model->components, dir, metadata, training, [&](const std::string& staging) {
      if (unet_trainer != nullptr && unet_trainer->unet) unet_trainer->unet->save_optimizer(staging + "/optimizer.pt");
      if (model->bank && !model->bank->categories().empty()) model->bank->save(staging + "/prototype_banks.safetensors");
    });
  });
}

ASD_API asd_status asd_model_info(asd_model* model, const char** out_json) {
  return ASD_GUARD({
    not_null(model, "model");
    not_null(out_json, "out_json");
    const pl::SdComponents& c = model->components;
    const nlohmann::json info = {{"source", c.source},
                                 {"device", c.device.str()},
                                 {"dtype", dtype_string(c.dtype)},
                                 {"latent_channels", c.latent_channels()},
                                 {"vae_scale_factor", c.vae_scale_factor()},
                                 {"scaling_factor", c.scaling_factor},
                                 {"parameters",
                                  {{"unet", pl::parameter_count(*c.unet)},
                                   {"vae", pl::parameter_count(*c.vae)},
                                   {"text_encoder", pl::parameter_count(*c.text_encoder)}}},
                                 {"architecture_fingerprint", pl::architecture_fingerprint(c)},
                                 {"categories", [&] {
                                    std::vector<std::string> names;
                                    for (const auto& kv : model->conditions) names.push_back(kv.first);
                                    return names;
                                  }()},
                                 {"single_file", c.single_file},
                                 {"metadata", model->metadata},
                                 {"training", model->training}};
    model->info_json = info.dump();
    *out_json = model->info_json.c_str();
  });
}

ASD_API asd_status asd_model_set_category(asd_model* model, const char* category, const int64_t* token_ids, int64_t num_prompts,
                                          int64_t length) {
  return ASD_GUARD({
    not_null(model, "model");
    const std::string name = not_null(category, "category");
    not_null(token_ids, "token_ids");
    asd::require(num_prompts >= 1 && length >= 1, "num_prompts and length must be >= 1");
    const torch::Tensor ids = asd::api::int64_buffer(token_ids, {num_prompts, length}, "token_ids");
    model->conditions[name] = pl::average_prompt_embedding(model->components, ids);
    model->prompt_ids[name] = ids;
  });
}

ASD_API asd_status asd_inpaint_options_default(asd_inpaint_options* out_options) {
  return ASD_GUARD({
    not_null(out_options, "out_options");
    *out_options = asd_inpaint_options{50, 0.4, 0, 0, 0, -1.0, 0, 0};
  });
}

ASD_API asd_status asd_model_auto_batch_size(const asd_model* model, int64_t height, int64_t width, int64_t num_masks, int64_t* out_batch) {
  return ASD_GUARD({
    not_null(model, "model");
    asd::require(height > 0 && width > 0 && num_masks >= 1, "height, width and num_masks must be >= 1");
    *not_null(out_batch, "out_batch") = pl::choose_batch_size(model->components, height, width, num_masks);
  });
}

ASD_API asd_status asd_model_inpaint(asd_model* model, const char* category, const float* image, int64_t height, int64_t width,
                                     const float* masks, int64_t num_masks, const asd_inpaint_options* options, float* out_images) {
  return ASD_GUARD({
    not_null(model, "model");
    const std::string name = not_null(category, "category");
    not_null(options, "options");
    not_null(out_images, "out_images");
    const torch::Tensor x = asd::api::float_buffer(image, {3, height, width}, "image");
    const torch::Tensor m = asd::api::float_buffer(masks, {num_masks, 1, height, width}, "masks");
    const pl::WindowedInpainting out = pl::inpaint_windows(model->components, x, m, asd::api::to_window_options(*options),
                                                           asd::api::inpaint_condition(*model, name, *options), asd::api::to_inpaint_options(*options),
                                                           nullptr, /*want_images=*/true);
    std::memcpy(out_images, out.images.contiguous().data_ptr<float>(), static_cast<size_t>(out.images.numel()) * sizeof(float));
  });
}

ASD_API asd_status asd_model_unet_gflops(const asd_model* model, int64_t height, int64_t width, double* out_gflops) {
  return ASD_GUARD({
    not_null(model, "model");
    const int64_t f = model->components.vae_scale_factor();
    asd::require(height >= f && width >= f, "height and width must be at least the VAE factor");
    *not_null(out_gflops, "out_gflops") =
        static_cast<double>(asd::models::unet_forward_flops(model->components.unet->config(), height / f, width / f)) / 1e9;
  });
}

ASD_API asd_status asd_model_free(asd_model* model) {
  return ASD_GUARD({ asd::api::release(model); });
}

ASD_API asd_status asd_trainer_options_default(asd_trainer_options* out_options) {
  return ASD_GUARD({ *not_null(out_options, "out_options") = default_trainer_options(); });
}

ASD_API asd_status asd_trainer_create(asd_model* model, const char* kind, const asd_trainer_options* options, asd_trainer** out_trainer) {
  return ASD_GUARD({
    not_null(model, "model");
    not_null(out_trainer, "out_trainer");
    const std::string k = not_null(kind, "kind");
    asd::require(k == "unet" || k == "decoder" || k == "autoencoder", "kind must be \"unet\", \"decoder\" or \"autoencoder\", got \"" + k + "\"");
    auto t = std::make_unique<asd_trainer>();
    t->kind = k;
    t->options = finetune_options(options != nullptr ? *options : default_trainer_options(), &t->beta);
    asd::check_mixed_precision(t->options.mixed_precision, model->components.device, model->components.dtype);
    model->references.fetch_add(1);  // released by ~asd_trainer
    t->model = model;
    *out_trainer = t.release();
  });
}

ASD_API asd_status asd_trainer_add_category(asd_trainer* trainer, const char* category, const float* images, const float* foregrounds,
                                            int64_t k, int64_t height, int64_t width, const int64_t* token_ids, int64_t num_prompts,
                                            int64_t length) {
  return ASD_GUARD({
    not_null(trainer, "trainer");
    asd::require(!trainer->unet && !trainer->decoder, "categories must be added before the first asd_trainer_run");
    pl::CategoryShots shots;
    shots.name = not_null(category, "category");
    shots.images = asd::api::float_buffer(images, {k, 3, height, width}, "images");
    shots.foregrounds = foregrounds == nullptr ? torch::ones({k, 1, height, width}) : asd::api::float_buffer(foregrounds, {k, 1, height, width}, "foregrounds");
    not_null(token_ids, "token_ids");
    asd::require(num_prompts >= 1 && length >= 1, "num_prompts and length must be >= 1");
    shots.prompt_ids = asd::api::int64_buffer(token_ids, {num_prompts, length}, "token_ids");
    trainer->data.push_back(std::move(shots));
  });
}

ASD_API asd_status asd_trainer_resume(asd_trainer* trainer, const char* folder) {
  return ASD_GUARD({
    not_null(trainer, "trainer");
    const std::string dir = not_null(folder, "folder");
    asd::require(trainer->kind == "unet", "only \"unet\" trainers resume");
    const nlohmann::json manifest = pl::read_checkpoint_manifest(dir);
    pl::check_architecture(manifest, pl::architecture_fingerprint(trainer->model->components), dir);
    const std::string optimizer = (std::filesystem::path(dir) / "optimizer.pt").string();
    if (!std::filesystem::exists(optimizer)) asd::throw_error(ASD_ERR_IO, "checkpoint '" + dir + "' has no optimizer.pt to resume from");
    trainer->resume_optimizer = optimizer;
    trainer->resume_steps = manifest.value("training", nlohmann::json::object()).value("unet_steps", int64_t{0});
    if (trainer->unet) trainer->unet->load_optimizer(optimizer, trainer->resume_steps);
  });
}

ASD_API asd_status asd_trainer_run(asd_trainer* trainer, int64_t steps, double* out_mean_loss) {
  return ASD_GUARD({
    not_null(trainer, "trainer");
    asd::require(steps >= 0, "steps must be >= 0");
    asd::require(!trainer->data.empty(), "add at least one category before running the trainer");
    pl::SdComponents& c = trainer->model->components;
    if (trainer->kind == "unet" && !trainer->unet) {
      trainer->unet = std::make_unique<pl::UNetFinetuner>(c, trainer->data, trainer->options);
      if (!trainer->resume_optimizer.empty()) trainer->unet->load_optimizer(trainer->resume_optimizer, trainer->resume_steps);
    }
    if (trainer->kind != "unet" && !trainer->decoder) {
      // eq. 10's perceptual term is the configured distance (asd_model_set_scoring): LPIPS-AlexNet or the ResNet18
      // fallback, averaged over pixels. Without scoring configured the loss is MSE alone and beta is unused.
      pl::PerceptualLoss perceptual;
      if (trainer->model->distance) {
        const asd::Lpips* distance = trainer->model->distance.get();
        perceptual = [distance](const torch::Tensor& x, const torch::Tensor& y) {
          return distance->distance_map(x.to(torch::kFloat32), y.to(torch::kFloat32)).mean({1, 2, 3});
        };
      }
      trainer->decoder = std::make_unique<pl::DecoderFinetuner>(c, trainer->data, trainer->options, perceptual, trainer->beta,
                                                                trainer->kind == "autoencoder");
    }
    double total = 0;
    for (int64_t i = 0; i < steps; ++i) total += trainer->unet ? trainer->unet->step() : trainer->decoder->step();
    if (trainer->kind == "autoencoder" && steps > 0) c.scaling_factor = pl::latent_scaling_factor(c, trainer->data, trainer->options.windows.inpaint_size);
    if (out_mean_loss != nullptr) *out_mean_loss = steps > 0 ? total / static_cast<double>(steps) : 0.0;
  });
}

ASD_API asd_status asd_trainer_steps(const asd_trainer* trainer, int64_t* out_steps) {
  return ASD_GUARD({
    not_null(trainer, "trainer");
    *not_null(out_steps, "out_steps") = trainer->unet ? trainer->unet->steps_done() : trainer->decoder ? trainer->decoder->steps_done() : trainer->resume_steps;
  });
}

ASD_API asd_status asd_trainer_free(asd_trainer* trainer) {
  return ASD_GUARD({ delete trainer; });
}

}  // extern "C"
