#include "schedulers/noise_schedule.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace asd::schedulers {

NoiseScheduleConfig NoiseScheduleConfig::from_json(const JsonConfig& config) {
  NoiseScheduleConfig c;
  c.num_train_timesteps = config.get<int64_t>("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = config.get<double>("beta_start", c.beta_start);
  c.beta_end = config.get<double>("beta_end", c.beta_end);
  if (config.has("trained_betas")) config.unsupported("trained_betas", "explicit beta lists are not supported; use beta_schedule");
  const std::string schedule = config.one_of("beta_schedule", "linear", {"linear", "scaled_linear"});
  c.beta_schedule = schedule == "linear" ? BetaSchedule::kLinear : BetaSchedule::kScaledLinear;
  const std::string prediction = config.one_of("prediction_type", "epsilon", {"epsilon", "v_prediction", "sample"});
  c.prediction_type = prediction == "epsilon"        ? PredictionType::kEpsilon
                      : prediction == "v_prediction" ? PredictionType::kVPrediction
                                                     : PredictionType::kSample;
  const std::string spacing = config.one_of("timestep_spacing", "leading", {"leading", "trailing", "linspace"});
  c.timestep_spacing = spacing == "leading"    ? TimestepSpacing::kLeading
                       : spacing == "trailing" ? TimestepSpacing::kTrailing
                                               : TimestepSpacing::kLinspace;
  c.steps_offset = config.get<int64_t>("steps_offset", c.steps_offset);
  c.clip_sample = config.get<bool>("clip_sample", c.clip_sample);
  c.clip_sample_range = config.get<double>("clip_sample_range", c.clip_sample_range);
  config.expect("thresholding", false);
  config.expect("rescale_betas_zero_snr", false);
  if (c.num_train_timesteps < 1) config.unsupported("num_train_timesteps", "must be >= 1");
  if (c.clip_sample_range <= 0) config.unsupported("clip_sample_range", "must be > 0");
  return c;
}

NoiseSchedule::NoiseSchedule(const NoiseScheduleConfig& config) : config_(config) {
  const int64_t T = config.num_train_timesteps;
  require(T >= 1, "noise schedule: num_train_timesteps must be >= 1, got " + std::to_string(T));
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  if (config.beta_schedule == BetaSchedule::kLinear) {
    betas_ = torch::linspace(config.beta_start, config.beta_end, T, f32);
  } else {
    betas_ = torch::linspace(std::sqrt(config.beta_start), std::sqrt(config.beta_end), T, f32).pow(2);
  }
  alphas_cumprod_ = torch::cumprod(1.0 - betas_, 0);
}

double NoiseSchedule::alpha_cumprod(int64_t t) const {
  require(t >= 0 && t < config_.num_train_timesteps,  // per scheduler step: format only on failure
          [&] { return "timestep " + std::to_string(t) + " is outside [0, " + std::to_string(config_.num_train_timesteps) + ")"; });
  return static_cast<double>(alphas_cumprod_.data_ptr<float>()[t]);
}

torch::Tensor NoiseSchedule::timesteps(int64_t n) const {
  const int64_t T = config_.num_train_timesteps;
  require(n >= 1 && n <= T, "num_inference_steps " + std::to_string(n) + " is outside [1, num_train_timesteps = " + std::to_string(T) + "]");
  std::vector<int64_t> ts;
  ts.reserve(static_cast<size_t>(n));
  switch (config_.timestep_spacing) {
    case TimestepSpacing::kLeading: {
      const int64_t step_ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i) ts.push_back(i * step_ratio + config_.steps_offset);
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.arange(T, 0, -ratio) has ceil(T / ratio) elements start + i * step; then np.round (half to even), -1.
      const double ratio = static_cast<double>(T) / static_cast<double>(n);
      const auto count = static_cast<int64_t>(std::ceil((0.0 - static_cast<double>(T)) / -ratio));
      for (int64_t i = 0; i < count; ++i) {
        ts.push_back(static_cast<int64_t>(std::nearbyint(static_cast<double>(T) + static_cast<double>(i) * -ratio)) - 1);
      }
      break;
    }
    case TimestepSpacing::kLinspace: {
      // np.linspace(0, T - 1, n): i * ((T - 1) / (n - 1)) + 0, last element exactly T - 1; round half to even.
      std::vector<int64_t> up;
      const double stop = static_cast<double>(T - 1);
      const double step = n > 1 ? stop / static_cast<double>(n - 1) : 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double y = (n > 1 && i == n - 1) ? stop : static_cast<double>(i) * step;
        up.push_back(static_cast<int64_t>(std::nearbyint(y)));
      }
      ts.assign(up.rbegin(), up.rend());
      break;
    }
  }
  return torch::tensor(ts, torch::kInt64);
}

torch::Tensor NoiseSchedule::gather_alphas(const torch::Tensor& timesteps, const torch::Tensor& like) const {
  require(like.dim() >= 1, "scheduler: samples must have a batch dimension");
  require(!timesteps.is_floating_point() && !timesteps.is_complex() && timesteps.scalar_type() != torch::kBool, "scheduler: timesteps must be an integer tensor");
  torch::Tensor t = timesteps.to(torch::kCPU, torch::kInt64).flatten();
  require(t.numel() == 1 || t.numel() == like.size(0),
          [&] { return "scheduler: " + std::to_string(t.numel()) + " timesteps for a batch of " + std::to_string(like.size(0)); });
  const int64_t T = config_.num_train_timesteps;
  require(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < T, [&] { return "scheduler: timesteps must lie in [0, " + std::to_string(T) + ")"; });
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = t.numel();
  return alphas_cumprod_.index_select(0, t).to(like.device(), like.scalar_type()).reshape(shape);
}

torch::Tensor NoiseSchedule::add_noise(const torch::Tensor& original_samples, const torch::Tensor& noise, const torch::Tensor& timesteps) const {
  require(original_samples.sizes() == noise.sizes(), "add_noise: original_samples and noise must have the same shape");
  const torch::Tensor acp = gather_alphas(timesteps, original_samples);
  return acp.sqrt() * original_samples + (1 - acp).sqrt() * noise.to(original_samples.device(), original_samples.scalar_type());
}

torch::Tensor NoiseSchedule::get_velocity(const torch::Tensor& sample, const torch::Tensor& noise, const torch::Tensor& timesteps) const {
  require(sample.sizes() == noise.sizes(), "get_velocity: sample and noise must have the same shape");
  const torch::Tensor acp = gather_alphas(timesteps, sample);
  return acp.sqrt() * noise.to(sample.device(), sample.scalar_type()) - (1 - acp).sqrt() * sample;
}

Prediction split_prediction(PredictionType type, const torch::Tensor& model_output, const torch::Tensor& sample, double alpha_prod_t) {
  require(model_output.sizes() == sample.sizes(), "scheduler step: model_output and sample must have the same shape");
  const double sqrt_a = std::sqrt(alpha_prod_t);
  const double sqrt_b = std::sqrt(1.0 - alpha_prod_t);
  Prediction p;
  switch (type) {
    case PredictionType::kEpsilon:
      p.original_sample = (sample - sqrt_b * model_output) / sqrt_a;
      p.epsilon = model_output;
      break;
    case PredictionType::kVPrediction:
      p.original_sample = sqrt_a * sample - sqrt_b * model_output;
      p.epsilon = sqrt_a * model_output + sqrt_b * sample;
      break;
    case PredictionType::kSample:
      p.original_sample = model_output;
      p.epsilon = (sample - sqrt_a * model_output) / sqrt_b;
      break;
  }
  return p;
}

int64_t strength_start_index(int64_t num_inference_steps, double noise_strength) {
  require(noise_strength >= 0.0 && noise_strength <= 1.0, "noise_strength must lie in [0, 1], got " + std::to_string(noise_strength));
  require(num_inference_steps >= 0, "num_inference_steps must be >= 0");
  // int() in Python truncates toward zero; the product is non-negative here.
  const auto init_timestep = std::min(static_cast<int64_t>(static_cast<double>(num_inference_steps) * noise_strength), num_inference_steps);
  return std::max<int64_t>(num_inference_steps - init_timestep, 0);
}

torch::Tensor timesteps_for_strength(const torch::Tensor& timesteps, double noise_strength) {
  require(timesteps.dim() == 1, "timesteps_for_strength: timesteps must be 1-D");
  const int64_t t_start = strength_start_index(timesteps.size(0), noise_strength);
  return timesteps.slice(0, t_start);
}

}  // namespace asd::schedulers
