// C API: scoring backbones, prototype banks (eq. 12-14) and distance maps of inpaintings (eq. 16-17).
#include <cstring>

#include <nlohmann/json.hpp>

#include "api/guard.h"
#include "api/handles.h"
#include "io/safetensors.h"
#include "pipeline/inpaint.h"
#include "pipeline/mutual_scoring.h"

using asd::api::not_null;
namespace pl = asd::pipeline;

namespace {

/// Masks of inpaintings scored per LPIPS batch (bounds the trunk's activation memory).
constexpr int64_t kDistanceBatch = 16;

torch::Tensor image_from(const float* data, int64_t h, int64_t w) { return asd::api::float_buffer(data, {1, 3, h, w}, "image"); }

void require_scoring(const asd_model* m) {
  if (!m->resnet || !m->distance) {
    asd::throw_error(ASD_ERR_INVALID_ARGUMENT, "scoring is not configured: call asd_model_set_scoring first");
  }
}

/// The model's bank, or ASD_ERR_NOT_FOUND naming a category without one.
const asd::PrototypeBank& bank_of(const asd_model* m, const std::string& category) {
  if (!m->bank || !m->bank->has(category)) asd::throw_error(ASD_ERR_NOT_FOUND, "category '" + category + "' has no prototype bank (asd_model_add_prototypes)");
  return *m->bank;
}

int64_t matching_radius(const asd_error_map_options* options) { return options == nullptr ? -1 : options->matching_radius; }

/// View angles from the C arrays, checked.
asd::BankViews views_from(const int64_t* rotations, int64_t num_rotations, int32_t horizontal_flip, const char* what) {
  asd::require(rotations != nullptr && num_rotations >= 1, std::string(what) + ": rotations must hold at least one angle");
  asd::require(horizontal_flip == 0 || horizontal_flip == 1, std::string(what) + ": horizontal_flip must be 0 or 1");
  asd::BankViews v{std::vector<int64_t>(rotations, rotations + num_rotations), horizontal_flip == 1};
  v.validate(what);
  return v;
}

/// Copies a CPU float32 tensor into a caller's buffer of `capacity` floats.
void copy_out(const torch::Tensor& t, float* out, int64_t capacity, const char* what) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  asd::require(capacity >= c.numel(), [&] { return std::string(what) + " holds " + std::to_string(capacity) + " floats, the result needs " + std::to_string(c.numel()); });
  std::memcpy(out, c.data_ptr<float>(), static_cast<size_t>(c.numel()) * sizeof(float));
}

asd::PrototypeExtractor extractor(asd_model* m) {
  const int64_t aggregation = m->bank->options().aggregation;
  return [m, aggregation](const torch::Tensor& rgb01) { return asd::prototype_features(*m->resnet, rgb01, aggregation); };
}

/// D(x, others_i) for x [1, 3, H, W] and others [N, 3, H, W] (both in [-1, 1]) into out (N x H x W floats),
/// kDistanceBatch images at a time.
void distance_maps(const asd_model* m, const torch::Tensor& x, const torch::Tensor& others, float* out) {
  torch::NoGradGuard no_grad;
  const torch::Device device = m->distance->device();
  const torch::Tensor xd = x.to(device, torch::kFloat32);
  const int64_t n = others.size(0), h = x.size(2), w = x.size(3);
  for (int64_t first = 0; first < n; first += kDistanceBatch) {
    const int64_t b = std::min(kDistanceBatch, n - first);
    const torch::Tensor d = m->distance->distance_map(xd.expand({b, 3, h, w}), others.narrow(0, first, b).to(device, torch::kFloat32))
                                .to(torch::kCPU, torch::kFloat32)
                                .contiguous();
    std::memcpy(out + first * h * w, d.data_ptr<float>(), static_cast<size_t>(d.numel()) * sizeof(float));
  }
}

}  // namespace

extern "C" {

ASD_API asd_status asd_scoring_options_default(asd_scoring_options* out_options) {
  return ASD_GUARD({ *not_null(out_options, "out_options") = asd_scoring_options{nullptr, ASD_DISTANCE_RESNET18_UNIFORM, nullptr, nullptr, nullptr, 0, 1, 0}; });
}

ASD_API asd_status asd_model_set_scoring(asd_model* model, const asd_scoring_options* options) {
  return ASD_GUARD({
    not_null(model, "model");
    const asd_scoring_options& o = *not_null(options, "options");
    asd::require(o.resnet18 != nullptr && *o.resnet18 != '\0', "scoring options: resnet18 (the path of resnet18_imagenet.safetensors) is required");
    asd::require(o.distance == ASD_DISTANCE_RESNET18_UNIFORM || o.distance == ASD_DISTANCE_LPIPS_ALEX,
                 [&] { return "scoring options: distance must be 0 (resnet18_uniform) or 1 (lpips_alex), got " + std::to_string(o.distance); });
    asd::require(o.feature_aggregation >= 1 && o.feature_aggregation % 2 == 1,
                 [&] { return "scoring options: feature_aggregation must be odd and >= 1 (1 = off, 3 = PatchCore), got " + std::to_string(o.feature_aggregation); });
    asd::BankViews views = model->views;
    if (o.rotations != nullptr) {
      asd::require(o.num_rotations >= 1, "scoring options: num_rotations must be >= 1 when rotations is given");
      views.rotations_deg.assign(o.rotations, o.rotations + o.num_rotations);
    }
    asd::require(o.horizontal_flip == 0 || o.horizontal_flip == 1, "scoring options: horizontal_flip must be 0 or 1");
    if (o.horizontal_flip == 1) views.horizontal_flip = true;
    views.validate("scoring options");
    const torch::Device device = model->components.device;
    asd::ResNet18 net = asd::load_resnet18(o.resnet18);
    net->eval();
    net->to(device);
    std::unique_ptr<asd::Lpips> distance;
    if (o.distance == ASD_DISTANCE_LPIPS_ALEX) {
      asd::require(o.alexnet != nullptr && o.lpips != nullptr, "scoring options: the lpips_alex distance needs the alexnet and lpips weight paths");
      distance = std::make_unique<asd::Lpips>(asd::Lpips::alex(asd::safetensors::load(o.alexnet), asd::safetensors::load(o.lpips)));
    } else {
      distance = std::make_unique<asd::Lpips>(asd::Lpips::resnet18_uniform(net));
    }
    distance->to(device);
    model->views = views;
    model->resnet = net;
    model->distance = std::move(distance);
    if (!model->bank) {
      asd::PrototypeBankOptions bo;
      bo.rotations_deg = model->views.rotations_deg;
      bo.horizontal_flip = model->views.horizontal_flip;
      bo.aggregation = o.feature_aggregation;
      model->bank = std::make_unique<asd::PrototypeBank>("resnet18-" + asd::to_string(net->padding()), std::vector<int64_t>{128, 256}, bo, device);
    }
  });
}

ASD_API asd_status asd_model_add_prototypes(asd_model* model, const char* category, const float* images, int64_t k, int64_t height,
                                            int64_t width) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    not_null(images, "images");
    asd::require(k >= 1 && height > 0 && width > 0, "k, height and width must be > 0");
    const torch::Tensor x = asd::api::float_buffer(images, {k, 3, height, width}, "images");
    model->bank->add_images(not_null(category, "category"), ((x + 1) / 2).to(model->components.device), extractor(model));
  });
}

ASD_API asd_status asd_model_set_prototypes(asd_model* model, const char* category, const float* images, int64_t k, int64_t height,
                                            int64_t width, const int64_t* rotations, int64_t num_rotations, int32_t horizontal_flip) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    not_null(images, "images");
    const std::string name = not_null(category, "category");
    asd::require(k >= 1 && height > 0 && width > 0, "k, height and width must be > 0");
    const asd::BankViews views = views_from(rotations, num_rotations, horizontal_flip, "asd_model_set_prototypes");
    const torch::Tensor x = asd::api::float_buffer(images, {k, 3, height, width}, "images");
    model->bank->replace_images(name, ((x + 1) / 2).to(model->components.device), extractor(model), views);
  });
}

ASD_API asd_status asd_model_prototype_views(const asd_model* model, const char* category, int64_t* out_rotations, int64_t capacity,
                                             int64_t* out_count, int32_t* out_horizontal_flip) {
  return ASD_GUARD({
    not_null(model, "model");
    const std::string name = not_null(category, "category");
    const asd::BankViews& v = bank_of(model, name).layout(name).views;
    const int64_t count = static_cast<int64_t>(v.rotations_deg.size());
    asd::require(out_rotations != nullptr || capacity == 0, "out_rotations is NULL but capacity > 0");
    for (int64_t i = 0; i < std::min(count, capacity); ++i) out_rotations[i] = v.rotations_deg[static_cast<size_t>(i)];
    if (out_count != nullptr) *out_count = count;
    if (out_horizontal_flip != nullptr) *out_horizontal_flip = v.horizontal_flip ? 1 : 0;
  });
}

ASD_API asd_status asd_error_map_options_default(asd_error_map_options* out_options) {
  return ASD_GUARD({ *not_null(out_options, "out_options") = asd_error_map_options{-1}; });
}

ASD_API asd_status asd_model_error_map(asd_model* model, const char* category, const float* image, int64_t height, int64_t width,
                                       const asd_error_map_options* options, float* out_map, int64_t capacity, int64_t* out_height,
                                       int64_t* out_width) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    asd::require(height > 0 && width > 0, "height and width must be > 0");
    const std::string name = not_null(category, "category");
    const asd::PrototypeBank& bank = bank_of(model, name);
    // ResNet18 layer2 is at stride 8: conv1, the max pool and layer2 each halve with ceil (torchvision padding).
    const int64_t fh = (height + 7) / 8, fw = (width + 7) / 8;
    if (out_map == nullptr) {  // size query: no feature extraction, no search
      if (out_height != nullptr) *out_height = fh;
      if (out_width != nullptr) *out_width = fw;
      return;
    }
    asd::require(capacity >= fh * fw, [&] { return "out_map holds " + std::to_string(capacity) + " floats, the map needs " + std::to_string(fh * fw); });
    const torch::Tensor x = image_from(image, height, width);
    const torch::Tensor features = extractor(model)(((x + 1) / 2).to(model->components.device));
    const torch::Tensor e = bank.error_map(name, features[0], matching_radius(options)).to(torch::kCPU, torch::kFloat32).contiguous();
    asd::require(e.size(0) == fh && e.size(1) == fw, "internal: the error map's size differs from the stride-8 rule");
    std::memcpy(out_map, e.data_ptr<float>(), static_cast<size_t>(e.numel()) * sizeof(float));
    if (out_height != nullptr) *out_height = fh;  // out-parameters only once nothing can fail any more
    if (out_width != nullptr) *out_width = fw;
  });
}

ASD_API asd_status asd_model_error_maps(asd_model* model, const char* category, const float* images, int64_t n, int64_t height, int64_t width,
                                        const asd_error_map_options* options, float* out_maps, int64_t capacity) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    not_null(images, "images");
    not_null(out_maps, "out_maps");
    asd::require(n >= 1 && height > 0 && width > 0, "n, height and width must be > 0");
    const std::string name = not_null(category, "category");
    const asd::PrototypeBank& bank = bank_of(model, name);
    const int64_t fh = (height + 7) / 8, fw = (width + 7) / 8;
    asd::require(capacity >= n * fh * fw, [&] { return "out_maps holds " + std::to_string(capacity) + " floats, the maps need " + std::to_string(n * fh * fw); });
    const torch::Tensor x = asd::api::float_buffer(images, {n, 3, height, width}, "images");
    const torch::Tensor features = extractor(model)(((x + 1) / 2).to(model->components.device));
    for (int64_t i = 0; i < n; ++i) {
      const torch::Tensor e = bank.error_map(name, features[i], matching_radius(options)).to(torch::kCPU, torch::kFloat32).contiguous();
      asd::require(e.size(0) == fh && e.size(1) == fw, "internal: the error map's size differs from the stride-8 rule");
      std::memcpy(out_maps + i * fh * fw, e.data_ptr<float>(), static_cast<size_t>(e.numel()) * sizeof(float));
    }
  });
}

ASD_API asd_status asd_model_prototype_features(asd_model* model, const float* images, int64_t n, int64_t height, int64_t width,
                                                float* out_features, int64_t capacity, int64_t* out_channels, int64_t* out_height,
                                                int64_t* out_width) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    asd::require(n >= 1 && height > 0 && width > 0, "n, height and width must be > 0");
    const int64_t c = model->bank->channels(), fh = (height + 7) / 8, fw = (width + 7) / 8;
    if (out_features != nullptr) {
      const torch::Tensor x = asd::api::float_buffer(not_null(images, "images"), {n, 3, height, width}, "images");
      const torch::Tensor f = extractor(model)(((x + 1) / 2).to(model->components.device));
      asd::require(f.size(1) == c && f.size(2) == fh && f.size(3) == fw, "internal: the features' size differs from the stride-8 rule");
      copy_out(f, out_features, capacity, "out_features");
    }
    if (out_channels != nullptr) *out_channels = c;
    if (out_height != nullptr) *out_height = fh;
    if (out_width != nullptr) *out_width = fw;
  });
}

ASD_API asd_status asd_model_feature_error_maps(asd_model* model, const char* category, const float* features, int64_t n, int64_t channels,
                                                int64_t fh, int64_t fw, const asd_error_map_options* options, float* out_maps,
                                                int64_t capacity) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    not_null(out_maps, "out_maps");
    const std::string name = not_null(category, "category");
    const asd::PrototypeBank& bank = bank_of(model, name);
    asd::require(n >= 1 && channels >= 1 && fh > 0 && fw > 0, "n, channels, fh and fw must be > 0");
    const torch::Tensor f = asd::api::float_buffer(not_null(features, "features"), {n, channels, fh, fw}, "features").to(model->components.device);
    asd::require(capacity >= n * fh * fw, [&] { return "out_maps holds " + std::to_string(capacity) + " floats, the maps need " + std::to_string(n * fh * fw); });
    // Image by image, as asd_model_error_maps: each image gets the map it gets alone.
    for (int64_t i = 0; i < n; ++i) copy_out(bank.error_map(name, f[i], matching_radius(options)), out_maps + i * fh * fw, fh * fw, "out_maps");
  });
}

ASD_API asd_status asd_mutual_options_default(asd_mutual_options* out_options) {
  return ASD_GUARD({ *not_null(out_options, "out_options") = asd_mutual_options{0.3, asd::kDefaultMaxChunkBytes}; });
}

ASD_API asd_status asd_model_mutual_maps(asd_model* model, const float* features, int64_t n, int64_t channels, int64_t fh, int64_t fw,
                                         const int64_t* refs, int64_t refs_per_image, const asd_mutual_options* options, float* out_maps,
                                         int64_t capacity) {
  return ASD_GUARD({
    not_null(model, "model");
    not_null(out_maps, "out_maps");
    asd::require(n >= 2, "mutual maps need at least 2 images");
    asd::require(channels >= 1 && fh > 0 && fw > 0, "channels, fh and fw must be > 0");
    asd::require(capacity >= n * fh * fw, [&] { return "out_maps holds " + std::to_string(capacity) + " floats, the maps need " + std::to_string(n * fh * fw); });
    const torch::Tensor f = asd::api::float_buffer(not_null(features, "features"), {n, channels, fh, fw}, "features").to(model->components.device);
    torch::Tensor r;
    if (refs != nullptr) {
      asd::require(refs_per_image >= 1, "refs_per_image must be >= 1 when refs is given");
      r = asd::api::int64_buffer(refs, {n, refs_per_image}, "refs");
    }
    asd::MutualOptions o;
    if (options != nullptr) {
      o.fraction = options->fraction;
      o.max_chunk_bytes = options->max_chunk_bytes;
    }
    copy_out(asd::mutual_scores(f, r, o), out_maps, capacity, "out_maps");
  });
}

ASD_API asd_status asd_model_inpaint_distances(asd_model* model, const char* category, const float* image, int64_t height,
                                               int64_t width, const float* masks, int64_t num_masks, const asd_inpaint_options* options,
                                               float* out_distances, float* out_images) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    not_null(options, "options");
    not_null(out_distances, "out_distances");
    const std::string name = not_null(category, "category");
    const torch::Tensor x = image_from(image, height, width);
    not_null(masks, "masks");
    asd::require(num_masks >= 1, "num_masks must be >= 1");
    const torch::Tensor m = asd::api::float_buffer(masks, {num_masks, 1, height, width}, "masks");
    const pl::WindowedInpainting out =
        pl::inpaint_windows(model->components, x[0], m, asd::api::to_window_options(*options), asd::api::inpaint_condition(*model, name, *options),
                            asd::api::to_inpaint_options(*options), model->distance.get(), /*want_images=*/out_images != nullptr);
    std::memcpy(out_distances, out.distances.contiguous().data_ptr<float>(), static_cast<size_t>(out.distances.numel()) * sizeof(float));
    if (out_images != nullptr) {
      std::memcpy(out_images, out.images.contiguous().data_ptr<float>(), static_cast<size_t>(out.images.numel()) * sizeof(float));
    }
  });
}

ASD_API asd_status asd_model_distance_maps(asd_model* model, const float* image, int64_t height, int64_t width, const float* others,
                                           int64_t n, float* out_maps) {
  return ASD_GUARD({
    not_null(model, "model");
    require_scoring(model);
    not_null(others, "others");
    not_null(out_maps, "out_maps");
    asd::require(n >= 1, "n must be >= 1");
    const torch::Tensor x = image_from(image, height, width);
    const torch::Tensor y = asd::api::float_buffer(others, {n, 3, height, width}, "others");
    distance_maps(model, x, y, out_maps);
  });
}

ASD_API asd_status asd_model_prototype_rows(const asd_model* model, const char* category, int64_t* out_rows) {
  return ASD_GUARD({
    not_null(model, "model");
    const std::string name = not_null(category, "category");
    *not_null(out_rows, "out_rows") = model->bank && model->bank->has(name) ? model->bank->prototypes(name).size(0) : 0;
  });
}

ASD_API asd_status asd_model_save_prototypes(const asd_model* model, const char* path) {
  return ASD_GUARD({
    not_null(model, "model");
    if (!model->bank) asd::throw_error(ASD_ERR_INVALID_ARGUMENT, "the model has no prototype banks");
    model->bank->save(not_null(path, "path"));
  });
}

ASD_API asd_status asd_model_load_prototypes(asd_model* model, const char* path) {
  return ASD_GUARD({
    not_null(model, "model");
    model->bank = std::make_unique<asd::PrototypeBank>(asd::PrototypeBank::load(not_null(path, "path"), model->components.device));
    model->views = model->bank->options().views();
  });
}

ASD_API asd_status asd_resnet18_pooled(const char* weights_path, const float* images, int64_t n, int64_t height, int64_t width,
                                       float* out_pooled) {
  return ASD_GUARD({
    not_null(images, "images");
    not_null(out_pooled, "out_pooled");
    asd::require(n >= 1 && height > 0 && width > 0, "n, height and width must be > 0");
    asd::ResNet18 net = asd::load_resnet18(not_null(weights_path, "weights_path"));
    torch::NoGradGuard no_grad;
    const torch::Tensor x = asd::api::float_buffer(images, {n, 3, height, width}, "images");
    const torch::Tensor pooled = net->pooled(net->preprocess().apply(x)).contiguous();
    std::memcpy(out_pooled, pooled.data_ptr<float>(), static_cast<size_t>(pooled.numel()) * sizeof(float));
  });
}

}  // extern "C"
