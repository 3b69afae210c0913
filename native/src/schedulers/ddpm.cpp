#include "schedulers/ddpm.h"

#include <cmath>

#include "core/error.h"

namespace asd::schedulers {

DDPMSchedulerConfig DDPMSchedulerConfig::from_json(const JsonConfig& config) {
  DDPMSchedulerConfig c;
  c.schedule = NoiseScheduleConfig::from_json(config);
  const std::string v = config.one_of("variance_type", "fixed_small", {"fixed_small", "fixed_small_log", "fixed_large"});
  c.variance_type = v == "fixed_large" ? VarianceType::kFixedLarge : VarianceType::kFixedSmall;
  return c;
}

DDPMScheduler::DDPMScheduler(const DDPMSchedulerConfig& config)
    : config_(config),
      schedule_(config.schedule),
      num_inference_steps_(config.schedule.num_train_timesteps),
      timesteps_(torch::arange(config.schedule.num_train_timesteps - 1, -1, -1, torch::kInt64)) {}

DDPMScheduler DDPMScheduler::load(const std::string& scheduler_config_path) {
  return DDPMScheduler(DDPMSchedulerConfig::from_json(JsonConfig::load(scheduler_config_path)));
}

torch::Tensor DDPMScheduler::set_timesteps(int64_t num_inference_steps) {
  timesteps_ = schedule_.timesteps(num_inference_steps);
  num_inference_steps_ = num_inference_steps;
  return timesteps_;
}

int64_t DDPMScheduler::previous_timestep(int64_t timestep) const {
  return timestep - config_.schedule.num_train_timesteps / num_inference_steps_;
}

double DDPMScheduler::variance(int64_t timestep) const {
  const int64_t prev_t = previous_timestep(timestep);
  const double alpha_prod_t = schedule_.alpha_cumprod(timestep);
  const double alpha_prod_t_prev = prev_t >= 0 ? schedule_.alpha_cumprod(prev_t) : 1.0;
  const double current_beta_t = 1.0 - alpha_prod_t / alpha_prod_t_prev;
  if (config_.variance_type == VarianceType::kFixedLarge) return current_beta_t;
  return std::max((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t, 1e-20);
}

torch::Tensor DDPMScheduler::step(const torch::Tensor& model_output, int64_t timestep, const torch::Tensor& sample,
                                  const std::optional<torch::Tensor>& variance_noise, std::optional<torch::Generator> generator) const {
  require(model_output.is_floating_point() && sample.is_floating_point(), "DDPMScheduler::step: model_output and sample must be floating");
  const int64_t prev_t = previous_timestep(timestep);
  const double alpha_prod_t = schedule_.alpha_cumprod(timestep);
  const double alpha_prod_t_prev = prev_t >= 0 ? schedule_.alpha_cumprod(prev_t) : 1.0;
  const double beta_prod_t = 1.0 - alpha_prod_t;
  const double beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
  const double current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
  const double current_beta_t = 1.0 - current_alpha_t;

  const torch::Tensor output = model_output.to(sample.device(), sample.scalar_type());
  torch::Tensor x0 = split_prediction(config_.schedule.prediction_type, output, sample, alpha_prod_t).original_sample;
  if (config_.schedule.clip_sample) {
    const double r = config_.schedule.clip_sample_range;
    x0 = x0.clamp(-r, r);
  }
  const double x0_coeff = std::sqrt(alpha_prod_t_prev) * current_beta_t / beta_prod_t;
  const double xt_coeff = std::sqrt(current_alpha_t) * beta_prod_t_prev / beta_prod_t;
  torch::Tensor prev_sample = x0_coeff * x0 + xt_coeff * sample;
  if (timestep > 0) {
    torch::Tensor noise;
    if (variance_noise.has_value()) {
      require(variance_noise->sizes() == sample.sizes(), "DDPMScheduler::step: variance_noise must have the sample's shape");
      noise = variance_noise->to(sample.device(), sample.scalar_type());
    } else {
      noise = generator.has_value() ? torch::randn(sample.sizes(), *generator, sample.options()) : torch::randn(sample.sizes(), sample.options());
    }
    prev_sample = prev_sample + std::sqrt(variance(timestep)) * noise;
  }
  return prev_sample;
}

}  // namespace asd::schedulers
