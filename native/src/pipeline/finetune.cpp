#include "pipeline/finetune.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "kernels/mask_concat.h"

namespace F = torch::nn::functional;

namespace asd::pipeline {

namespace {

constexpr double kPi = 3.14159265358979323846;

void check_data(const std::vector<CategoryShots>& data) {
  require(!data.empty(), "fine-tuning needs at least one category");
  for (const CategoryShots& d : data) {
    require(d.images.dim() == 4 && d.images.size(0) >= 1 && d.images.size(1) == 3,
            "category '" + d.name + "': images must be [K >= 1, 3, H, W]");
    require(d.foregrounds.dim() == 4 && d.foregrounds.size(0) == d.images.size(0) && d.foregrounds.size(1) == 1 &&
                d.foregrounds.size(2) == d.images.size(2) && d.foregrounds.size(3) == d.images.size(3),
            "category '" + d.name + "': foregrounds must be [K, 1, H, W] matching the images");
    require(d.prompt_ids.dim() == 2 && d.prompt_ids.size(0) >= 1 && d.prompt_ids.scalar_type() == torch::kInt64,
            "category '" + d.name + "': prompt_ids must be int64 [P >= 1, L]");
    require(d.images.size(2) == data[0].images.size(2) && d.images.size(3) == data[0].images.size(3),
            "category '" + d.name + "': all categories must share one image size");
  }
}

/// Per-step randomness: derived from (seed, step), so a resumed run draws exactly what an uninterrupted one would.
struct StepRandom {
  torch::Generator generator;
  std::mt19937_64 rng;
  StepRandom(uint64_t seed, int64_t step, uint64_t stream)
      : generator(at::detail::createCPUGenerator(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step) * 2 + stream)),
        rng(seed ^ (static_cast<uint64_t>(step) * 0xBF58476D1CE4E5B9ULL) ^ stream) {}
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
};

torch::Tensor encode_mean(SdComponents& c, const torch::Tensor& x) { return c.vae->encode(x).first * c.scaling_factor; }

/// Tokenised prompts -> frozen embeddings [P, L, D], once.
std::vector<torch::Tensor> embed_prompts(SdComponents& c, const std::vector<CategoryShots>& data) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (const CategoryShots& d : data) out.push_back(c.text_encoder->forward(d.prompt_ids.to(c.device)).detach());
  return out;
}

void write_optimizer(const torch::optim::Adam& optimizer, const LossScaler& scaler, const std::string& path) {
  std::ostringstream buffer;
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  archive.write("anomalysd_loss_scale", torch::tensor(scaler.scale(), torch::kFloat64));
  archive.write("anomalysd_loss_scale_growth_tracker", torch::tensor(scaler.growth_tracker(), torch::kInt64));
  archive.save_to(buffer);
  const std::string bytes = buffer.str();
  write_file_atomically(path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

void read_optimizer(torch::optim::Adam& optimizer, LossScaler& scaler, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(ASD_ERR_IO, "cannot open optimizer state '" + path + "'");
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    optimizer.load(archive);
    torch::Tensor scale, tracker;  // absent in files written without mixed precision support: keep the defaults
    if (archive.try_read("anomalysd_loss_scale", scale) && archive.try_read("anomalysd_loss_scale_growth_tracker", tracker) &&
        scaler.enabled()) {
      scaler.set_state(scale.item<double>(), tracker.item<int64_t>());
    }
  } catch (const c10::Error& e) {
    throw_error(ASD_ERR_FORMAT, "optimizer state '" + path + "' is corrupt or belongs to another model: " + e.what_without_backtrace());
  }
}

}  // namespace

TrainingBatch draw_batch(const std::vector<CategoryShots>& data, int64_t batch_size, int64_t step, const AugmentOptions& a,
                         torch::Generator& generator, std::mt19937_64& rng) {
  const int64_t C = static_cast<int64_t>(data.size());
  TrainingBatch batch;
  std::vector<torch::Tensor> images, foregrounds;
  std::vector<double> angles, scales;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t i = 0; i < batch_size; ++i) {
    const int64_t cat = (step * batch_size + i) % C;
    const CategoryShots& d = data[static_cast<size_t>(cat)];
    const int64_t k = std::uniform_int_distribution<int64_t>(0, d.images.size(0) - 1)(rng);
    images.push_back(d.images[k]);
    foregrounds.push_back(d.foregrounds[k].to(d.images.scalar_type()));
    batch.categories.push_back(cat);
    angles.push_back((unit(rng) * 2 - 1) * a.rotation_degrees * kPi / 180.0);
    scales.push_back(a.scale_min + unit(rng) * (a.scale_max - a.scale_min));
  }
  torch::Tensor x = torch::stack(images);
  torch::Tensor fg = torch::stack(foregrounds);
  // Joint rotation + zoom: sampling grid of the inverse transform (output pixel -> input pixel).
  torch::Tensor theta = torch::zeros({batch_size, 2, 3}, torch::kFloat32);
  for (int64_t i = 0; i < batch_size; ++i) {
    const double cs = std::cos(angles[i]) / scales[i], sn = std::sin(angles[i]) / scales[i];
    theta[i][0][0] = cs;
    theta[i][0][1] = -sn;
    theta[i][1][0] = sn;
    theta[i][1][1] = cs;
  }
  theta = theta.to(x.device(), x.scalar_type());
  const torch::Tensor grid = F::affine_grid(theta, x.sizes(), /*align_corners=*/false);
  x = F::grid_sample(x, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(false));
  fg = F::grid_sample(fg, grid, F::GridSampleFuncOptions().mode(torch::kNearest).padding_mode(torch::kBorder).align_corners(false));
  // Brightness and contrast, per image.
  const auto opts = torch::TensorOptions().dtype(x.scalar_type());
  const torch::Tensor gain = (1 + (torch::rand({batch_size, 1, 1, 1}, generator, opts) * 2 - 1) * a.contrast).to(x.device());
  const torch::Tensor shift = ((torch::rand({batch_size, 1, 1, 1}, generator, opts) * 2 - 1) * a.brightness).to(x.device());
  const torch::Tensor mean = x.mean({1, 2, 3}, /*keepdim=*/true);
  batch.images = ((x - mean) * gain + mean + shift).clamp(-1, 1);
  batch.foregrounds = fg;
  return batch;
}

WindowedBatch window_batch(const TrainingBatch& b, std::mt19937_64& rng, const TrainingMaskOptions& mo, const WindowOptions& wo, bool draw_masks) {
  const int64_t B = b.images.size(0), H = b.images.size(2), W = b.images.size(3);
  const int64_t P = wo.inpaint_size > 0 ? wo.inpaint_size : H, Pw = wo.inpaint_size > 0 ? wo.inpaint_size : W;
  const torch::ScalarType dtype = b.images.scalar_type();
  WindowedBatch out;
  if (!draw_masks && wo.full()) {
    out.images = resample_image(b.images.to(torch::kFloat32), P, Pw).to(dtype);
    return out;
  }
  std::vector<torch::Tensor> images, masks;
  for (int64_t i = 0; i < B; ++i) {
    const TrainingMask m = sample_training_mask(MaskIntegral(b.foregrounds[i]), rng, mo);
    const Window w = window_for(m.rect, H, W, wo);
    const torch::Tensor x = b.images.narrow(0, i, 1);
    images.push_back(resample_image(crop(x.to(torch::kFloat32), w), P, Pw).to(dtype));
    masks.push_back(resample_mask(crop(rect_mask(m.rect, H, W).unsqueeze(0).to(x.device()), w), P, Pw).to(dtype));
  }
  out.images = torch::cat(images);
  out.masks = torch::cat(masks);
  return out;
}

UNetFinetuner::UNetFinetuner(SdComponents& components, std::vector<CategoryShots> data, const FinetuneOptions& options)
    : c_(components),
      data_((check_data(data), std::move(data))),
      options_(options),
      prompt_embeddings_(embed_prompts(components, data_)),
      optimizer_(components.unet->parameters(), torch::optim::AdamOptions(options.learning_rate)),
      scaler_(options.mixed_precision == MixedPrecision::kFP16) {
  require(options.batch_size >= 1 && options.gradient_accumulation >= 1, "batch_size and gradient_accumulation must be >= 1");
  check_mixed_precision(options.mixed_precision, c_.device, c_.dtype);
  require(options.learning_rate > 0, "learning_rate must be > 0");
  for (auto& d : data_) {
    d.images = d.images.to(c_.device, c_.dtype);
    d.foregrounds = d.foregrounds.to(c_.device, c_.dtype);
  }
  const int64_t f = c_.vae_scale_factor();
  const int64_t P = options.windows.inpaint_size;
  require(P > 0 || options.windows.full(), "windows (context >= 0) need an inpaint_size > 0");
  require(P > 0 ? P % f == 0 : data_[0].images.size(2) % f == 0 && data_[0].images.size(3) % f == 0,
          "the inpainting size must be a multiple of the VAE factor " + std::to_string(f));
}

double UNetFinetuner::step() {
  const CpuBf16TrainingGuard onednn_off(c_.device, options_.mixed_precision);  // libtorch 2.x shim, see its header
  c_.unet->train();
  c_.vae->eval();
  optimizer_.zero_grad();
  const int64_t T = c_.scheduler.schedule.num_train_timesteps;
  const schedulers::NoiseSchedule schedule(c_.scheduler.schedule);
  double total = 0;
  for (int64_t micro = 0; micro < options_.gradient_accumulation; ++micro) {
    const int64_t index = steps_done_ * options_.gradient_accumulation + micro;
    StepRandom r(options_.seed, index, 1);
    const TrainingBatch drawn = draw_batch(data_, options_.batch_size, index, options_.augment, r.generator, r.rng);
    // Masks and their windows first, then one prompt per sample (the order of the random draws is part of resume).
    const WindowedBatch b = window_batch(drawn, r.rng, options_.masks, options_.windows, /*draw_masks=*/true);
    const int64_t B = options_.batch_size, H = b.images.size(2), W = b.images.size(3);
    const int64_t h = H / c_.vae_scale_factor(), w = W / c_.vae_scale_factor();
    std::vector<torch::Tensor> contexts;
    for (int64_t i = 0; i < B; ++i) {
      const torch::Tensor& prompts = prompt_embeddings_[static_cast<size_t>(drawn.categories[i])];
      contexts.push_back(prompts[std::uniform_int_distribution<int64_t>(0, prompts.size(0) - 1)(r.rng)]);
    }
    const torch::Tensor m = b.masks.to(c_.device, c_.dtype);
    const torch::Tensor context = torch::stack(contexts);
    torch::Tensor loss;
    {
      AutocastGuard autocast(c_.device, options_.mixed_precision);
      torch::Tensor z, z_masked;
      {
        torch::NoGradGuard frozen;  // E(·) is not trained here
        z = encode_mean(c_, b.images).to(c_.dtype);
        z_masked = encode_mean(c_, b.images * (1 - m)).to(c_.dtype);
      }
      const torch::Tensor m_small = F::interpolate(m, F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kNearest));
      const torch::Tensor t = torch::randint(0, T, {B}, r.generator, torch::TensorOptions().dtype(torch::kInt64));
      const torch::Tensor noise = torch::randn(z.sizes(), r.generator, torch::TensorOptions().dtype(torch::kFloat32)).to(c_.device, c_.dtype);
      const torch::Tensor z_t = schedule.add_noise(z, noise, t);
      const torch::Tensor pred = c_.unet->forward(kernels::mask_concat(z_t, z_masked, m_small), t.to(c_.device), context);
      const torch::Tensor target =
          c_.scheduler.schedule.prediction_type == schedulers::PredictionType::kVPrediction ? schedule.get_velocity(z, noise, t) : noise;
      loss = F::mse_loss(pred.to(torch::kFloat32), target.to(torch::kFloat32)) / options_.gradient_accumulation;
    }
    scaler_.backward(loss);  // outside autocast, as libtorch asks
    total += loss.item<double>();
  }
  scaler_.step(optimizer_);
  ++steps_done_;
  c_.unet->eval();
  return total;
}

void UNetFinetuner::save_optimizer(const std::string& path) const { write_optimizer(optimizer_, scaler_, path); }

void UNetFinetuner::load_optimizer(const std::string& path, int64_t steps_done) {
  require(steps_done >= 0, "steps_done must be >= 0");
  read_optimizer(optimizer_, scaler_, path);
  steps_done_ = steps_done;
}

namespace {
std::vector<torch::Tensor> decoder_parameters(SdComponents& c, bool train_encoder) {
  std::vector<torch::Tensor> params;
  for (const auto& p : c.vae->named_parameters()) {
    const std::string& name = p.key();
    const bool decoder = name.rfind("decoder.", 0) == 0 || name.rfind("post_quant_conv.", 0) == 0;
    if (decoder || train_encoder) params.push_back(p.value());
  }
  return params;
}
}  // namespace

DecoderFinetuner::DecoderFinetuner(SdComponents& components, std::vector<CategoryShots> data, const FinetuneOptions& options,
                                   PerceptualLoss perceptual, double beta, bool train_encoder)
    : c_(components),
      data_((check_data(data), std::move(data))),
      options_(options),
      perceptual_(std::move(perceptual)),
      beta_(beta),
      train_encoder_(train_encoder),
      params_(decoder_parameters(components, train_encoder)),
      optimizer_(params_, torch::optim::AdamOptions(options.learning_rate)),
      scaler_(options.mixed_precision == MixedPrecision::kFP16) {
  require(beta >= 0, "beta must be >= 0");
  check_mixed_precision(options.mixed_precision, c_.device, c_.dtype);
  for (auto& d : data_) {
    d.images = d.images.to(c_.device, c_.dtype);
    d.foregrounds = d.foregrounds.to(c_.device, c_.dtype);
  }
}

double DecoderFinetuner::step() {
  const CpuBf16TrainingGuard onednn_off(c_.device, options_.mixed_precision);  // libtorch 2.x shim, see its header
  c_.vae->train();
  optimizer_.zero_grad();
  double total = 0;
  for (int64_t micro = 0; micro < options_.gradient_accumulation; ++micro) {
    const int64_t index = steps_done_ * options_.gradient_accumulation + micro;
    StepRandom r(options_.seed, index, 2);
    // The decoder sees what inference decodes: windows around training masks (full context: whole images).
    const WindowedBatch b = window_batch(draw_batch(data_, options_.batch_size, index, options_.augment, r.generator, r.rng), r.rng, options_.masks,
                                         options_.windows, /*draw_masks=*/false);
    torch::Tensor loss;
    {
      AutocastGuard autocast(c_.device, options_.mixed_precision);
      torch::Tensor mean, logvar;
      if (train_encoder_) {
        std::tie(mean, logvar) = c_.vae->encode(b.images);
      } else {
        torch::NoGradGuard frozen;
        std::tie(mean, logvar) = c_.vae->encode(b.images);
      }
      torch::Tensor latents = mean;
      torch::Tensor kl = torch::zeros({}, mean.options().dtype(torch::kFloat32));
      if (train_encoder_) {  // reparameterised posterior sample + KL to N(0, I), as in SD's autoencoder training
        const torch::Tensor eps = torch::randn(mean.sizes(), r.generator, torch::TensorOptions().dtype(torch::kFloat32)).to(mean.device(), mean.scalar_type());
        latents = mean + torch::exp(0.5 * logvar) * eps;
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).to(torch::kFloat32).sum({1, 2, 3}).mean();
      }
      const torch::Tensor recon = c_.vae->decode(latents).to(torch::kFloat32);
      loss = F::mse_loss(recon, b.images.to(torch::kFloat32));
      if (beta_ > 0 && perceptual_) loss = loss + beta_ * perceptual_(b.images, recon).to(torch::kFloat32).mean();
      loss = (loss + 1e-6 * kl) / options_.gradient_accumulation;
    }
    scaler_.backward(loss);
    total += loss.item<double>();
  }
  scaler_.step(optimizer_);
  ++steps_done_;
  c_.vae->eval();
  return total;
}

double latent_scaling_factor(SdComponents& c, const std::vector<CategoryShots>& data, int64_t inpaint_size) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> latents;
  for (const CategoryShots& d : data) {
    const torch::Tensor x = inpaint_size > 0 ? resample_image(d.images.to(torch::kFloat32), inpaint_size, inpaint_size) : d.images;
    latents.push_back(c.vae->encode(x.to(c.device, c.dtype)).first.flatten());
  }
  const double std = torch::cat(latents).to(torch::kFloat64).std().item<double>();
  require(std > 0 && std::isfinite(std), "latent_scaling_factor: latents have zero or non-finite spread");
  return 1.0 / std;
}

}  // namespace asd::pipeline
