#include "schedulers/ddim.h"

#include <cmath>

#include "core/error.h"

namespace asd::schedulers {

DDIMSchedulerConfig DDIMSchedulerConfig::from_json(const JsonConfig& config) {
  DDIMSchedulerConfig c;
  c.schedule = NoiseScheduleConfig::from_json(config);
  c.set_alpha_to_one = config.get<bool>("set_alpha_to_one", c.set_alpha_to_one);
  return c;
}

DDIMScheduler::DDIMScheduler(const DDIMSchedulerConfig& config)
    : config_(config),
      schedule_(config.schedule),
      final_alpha_cumprod_(config.set_alpha_to_one ? 1.0 : schedule_.alpha_cumprod(0)),
      timesteps_(torch::empty({0}, torch::kInt64)) {}

DDIMScheduler DDIMScheduler::load(const std::string& scheduler_config_path) {
  return DDIMScheduler(DDIMSchedulerConfig::from_json(JsonConfig::load(scheduler_config_path)));
}

torch::Tensor DDIMScheduler::set_timesteps(int64_t num_inference_steps) {
  timesteps_ = schedule_.timesteps(num_inference_steps);
  num_inference_steps_ = num_inference_steps;
  return timesteps_;
}

torch::Tensor DDIMScheduler::step(const torch::Tensor& model_output, int64_t timestep, const torch::Tensor& sample, double eta,
                                  const std::optional<torch::Tensor>& variance_noise, std::optional<torch::Generator> generator) const {
  require(num_inference_steps_ > 0, "DDIMScheduler::step: call set_timesteps first");
  require(eta >= 0.0, "DDIMScheduler::step: eta must be >= 0");
  require(model_output.is_floating_point() && sample.is_floating_point(), "DDIMScheduler::step: model_output and sample must be floating");
  const int64_t prev_timestep = timestep - config_.schedule.num_train_timesteps / num_inference_steps_;
  const double alpha_prod_t = schedule_.alpha_cumprod(timestep);
  const double alpha_prod_t_prev = prev_timestep >= 0 ? schedule_.alpha_cumprod(prev_timestep) : final_alpha_cumprod_;
  const double beta_prod_t = 1.0 - alpha_prod_t;
  const double beta_prod_t_prev = 1.0 - alpha_prod_t_prev;

  const torch::Tensor output = model_output.to(sample.device(), sample.scalar_type());
  Prediction p = split_prediction(config_.schedule.prediction_type, output, sample, alpha_prod_t);
  if (config_.schedule.clip_sample) {
    const double r = config_.schedule.clip_sample_range;
    p.original_sample = p.original_sample.clamp(-r, r);
  }
  // _get_variance: (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
  const double variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
  const double std_dev_t = eta * std::sqrt(std::max(variance, 0.0));
  const double direction_coeff = std::sqrt(std::max(1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t, 0.0));
  torch::Tensor prev_sample = std::sqrt(alpha_prod_t_prev) * p.original_sample + direction_coeff * p.epsilon;
  if (eta > 0.0) {
    torch::Tensor noise;
    if (variance_noise.has_value()) {
      require(variance_noise->sizes() == sample.sizes(), "DDIMScheduler::step: variance_noise must have the sample's shape");
      noise = variance_noise->to(sample.device(), sample.scalar_type());
    } else {
      noise = generator.has_value() ? torch::randn(sample.sizes(), *generator, sample.options()) : torch::randn(sample.sizes(), sample.options());
    }
    prev_sample = prev_sample + std_dev_t * noise;
  }
  return prev_sample;
}

}  // namespace asd::schedulers
