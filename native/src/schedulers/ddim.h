// DDIM scheduler with diffusers 0.21 semantics (schedulers/scheduling_ddim.py, DDIMScheduler; Song et al.
// 2021, "Denoising Diffusion Implicit Models", eq. 12). The denoising loop that calls step() lives in the
// pipeline, not here:
//
//   DDIMScheduler s = DDIMScheduler::load(folder + "/scheduler/scheduler_config.json");
//   torch::Tensor ts = timesteps_for_strength(s.set_timesteps(50), noise_strength);
//   x = s.add_noise(x0, noise, ts[0]);
//   for t in ts: x = s.step(unet(x, t), t, x);
#pragma once

#include <optional>
#include <string>

#include <torch/torch.h>

#include "io/json_config.h"
#include "schedulers/noise_schedule.h"

namespace asd::schedulers {

struct DDIMSchedulerConfig {
  NoiseScheduleConfig schedule;
  /// alpha_prod_t_prev used for the last step (prev timestep < 0): 1.0 if true, else alphas_cumprod[0].
  /// diffusers' default is true; Stable Diffusion's config sets false.
  bool set_alpha_to_one = true;

  /// Reads a diffusers scheduler_config.json (shared keys: NoiseScheduleConfig::from_json).
  static DDIMSchedulerConfig from_json(const JsonConfig& config);
};

class DDIMScheduler {
 public:
  explicit DDIMScheduler(const DDIMSchedulerConfig& config);
  /// From scheduler/scheduler_config.json. ASD_ERR_IO / ASD_ERR_FORMAT / ASD_ERR_UNSUPPORTED (naming the key).
  static DDIMScheduler load(const std::string& scheduler_config_path);

  const DDIMSchedulerConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  /// [T] float32.
  const torch::Tensor& alphas_cumprod() const { return schedule_.alphas_cumprod(); }
  double final_alpha_cumprod() const { return final_alpha_cumprod_; }

  /// diffusers set_timesteps: remembers n (step() needs it for the previous timestep) and returns the
  /// timesteps [n] int64, descending (see NoiseSchedule::timesteps for the spacing rules).
  torch::Tensor set_timesteps(int64_t num_inference_steps);
  /// The timesteps of the last set_timesteps ([0] before the first call).
  const torch::Tensor& timesteps() const { return timesteps_; }
  int64_t num_inference_steps() const { return num_inference_steps_; }

  /// One DDIM update x_t -> x_{t_prev} (diffusers DDIMScheduler.step, use_clipped_model_output false):
  ///   t_prev = t - T // n;  a_t = acp[t];  a_prev = acp[t_prev] if t_prev >= 0 else final_alpha_cumprod
  ///   x0_hat, eps_hat from model_output per prediction_type (epsilon / v_prediction / sample);
  ///   x0_hat clamped to +-clip_sample_range if clip_sample
  ///   sigma = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
  ///   prev = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - sigma^2) * eps_hat (+ sigma * noise if eta > 0)
  /// model_output, sample: same shape [B, C, H, W] (any shape works), floating. timestep in [0, T).
  /// eta > 0 draws the noise from `generator` (or the default generator) in the sample's dtype/device, unless
  /// `variance_noise` (sample's shape) is given. Returns prev_sample with the sample's shape and dtype.
  /// ASD_ERR_INVALID_ARGUMENT if set_timesteps was not called, for mismatched shapes, eta < 0, or t out of range.
  torch::Tensor step(const torch::Tensor& model_output, int64_t timestep, const torch::Tensor& sample, double eta = 0.0,
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
  DDIMSchedulerConfig config_;
  NoiseSchedule schedule_;
  double final_alpha_cumprod_;
  int64_t num_inference_steps_ = 0;
  torch::Tensor timesteps_;
};

}  // namespace asd::schedulers
