// DDPM scheduler with diffusers 0.21 semantics (schedulers/scheduling_ddpm.py, DDPMScheduler; Ho et al. 2020,
// "Denoising Diffusion Probabilistic Models", eq. 6-7: the posterior q(x_{t-1} | x_t, x_0)). Used for
// training targets and for ancestral sampling; the loop that calls step() lives in the pipeline.
#pragma once

#include <optional>
#include <string>

#include <torch/torch.h>

#include "io/json_config.h"
#include "schedulers/noise_schedule.h"

namespace asd::schedulers {

enum class VarianceType {
  kFixedSmall,  ///< "fixed_small" (default): beta_tilde_t = (1 - a_prev) / (1 - a_t) * beta_t, clamped to >= 1e-20
  kFixedLarge,  ///< "fixed_large": beta_t
};

struct DDPMSchedulerConfig {
  NoiseScheduleConfig schedule;
  /// "fixed_small" | "fixed_small_log" (the same standard deviation) | "fixed_large". The learned variants
  /// and "fixed_large_log": ASD_ERR_UNSUPPORTED naming `variance_type`.
  VarianceType variance_type = VarianceType::kFixedSmall;

  static DDPMSchedulerConfig from_json(const JsonConfig& config);
};

class DDPMScheduler {
 public:
  /// Before set_timesteps, the timesteps are all T train steps (T-1 .. 0), as in diffusers.
  explicit DDPMScheduler(const DDPMSchedulerConfig& config);
  /// From scheduler/scheduler_config.json. ASD_ERR_IO / ASD_ERR_FORMAT / ASD_ERR_UNSUPPORTED (naming the key).
  static DDPMScheduler load(const std::string& scheduler_config_path);

  const DDPMSchedulerConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  /// [T] float32.
  const torch::Tensor& alphas_cumprod() const { return schedule_.alphas_cumprod(); }

  /// diffusers set_timesteps: remembers n and returns the timesteps [n] int64, descending.
  torch::Tensor set_timesteps(int64_t num_inference_steps);
  const torch::Tensor& timesteps() const { return timesteps_; }
  int64_t num_inference_steps() const { return num_inference_steps_; }
  /// diffusers previous_timestep: t - T // n.
  int64_t previous_timestep(int64_t timestep) const;

  /// The variance of step t (diffusers _get_variance with the configured variance_type), n as set.
  double variance(int64_t timestep) const;

  /// One ancestral step x_t -> x_{t_prev} (diffusers DDPMScheduler.step):
  ///   a_t = acp[t]; a_prev = acp[t_prev] if t_prev >= 0 else 1; alpha_t = a_t / a_prev; beta_t = 1 - alpha_t
  ///   x0_hat per prediction_type, clamped to +-clip_sample_range if clip_sample
  ///   mean = sqrt(a_prev) beta_t / (1 - a_t) * x0_hat + sqrt(alpha_t) (1 - a_prev) / (1 - a_t) * x_t   (eq. 7)
  ///   prev = mean + sqrt(variance(t)) * z   for t > 0 (z from `variance_noise` or randn with `generator`)
  /// model_output, sample: same shape, floating. Returns prev_sample in the sample's shape and dtype.
  torch::Tensor step(const torch::Tensor& model_output, int64_t timestep, const torch::Tensor& sample,
                     const std::optional<torch::Tensor>& variance_noise = std::nullopt,
                     std::optional<torch::Generator> generator = std::nullopt) const;

  /// See NoiseSchedule::add_noise / get_velocity.
  torch::Tensor add_noise(const torch::Tensor& original_samples, const torch::Tensor& noise, const torch::Tensor& timesteps) const {
    return schedule_.add_noise(original_samples, noise, timesteps);
  }
  torch::Tensor get_velocity(const torch::Tensor& sample, const torch::Tensor& noise, const torch::Tensor& timesteps) const {
    return schedule_.get_velocity(sample, noise, timesteps);
  }

 private:
  DDPMSchedulerConfig config_;
  NoiseSchedule schedule_;
  int64_t num_inference_steps_;
  torch::Tensor timesteps_;
};

}  // namespace asd::schedulers
