// What DDIM and DDPM share (diffusers 0.21, schedulers/scheduling_ddim.py and scheduling_ddpm.py): the
// config keys, the beta schedule and alphas_cumprod, the inference timesteps, the forward process
// (add_noise), the v-prediction target (get_velocity), and the inpainting pipelines' strength rule.
//
// Tensors: alphas_cumprod and betas are float32 on the CPU, like diffusers'. Timesteps are int64, descending.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "io/json_config.h"

namespace asd::schedulers {

enum class BetaSchedule { kLinear, kScaledLinear };
enum class PredictionType { kEpsilon, kVPrediction, kSample };
enum class TimestepSpacing { kLeading, kTrailing, kLinspace };

/// The scheduler_config.json keys both schedulers read. Defaults are diffusers' constructor defaults
/// (note: clip_sample defaults to true there; Stable Diffusion's config sets it to false).
struct NoiseScheduleConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  /// "linear" | "scaled_linear". "squaredcos_cap_v2", "sigmoid" and `trained_betas`: ASD_ERR_UNSUPPORTED.
  BetaSchedule beta_schedule = BetaSchedule::kLinear;
  /// "epsilon" | "v_prediction" | "sample".
  PredictionType prediction_type = PredictionType::kEpsilon;
  /// "leading" | "trailing" | "linspace" (diffusers' table 2 of "Common Diffusion Noise Schedules and Sample
  /// Steps are Flawed", arXiv:2305.08891).
  TimestepSpacing timestep_spacing = TimestepSpacing::kLeading;
  int64_t steps_offset = 0;
  bool clip_sample = true;
  double clip_sample_range = 1.0;

  /// Reads the shared keys; `thresholding` must be false, `rescale_betas_zero_snr` false, `trained_betas`
  /// absent (else ASD_ERR_UNSUPPORTED naming the key). Unknown keys are ignored.
  static NoiseScheduleConfig from_json(const JsonConfig& config);
};

/// betas, alphas_cumprod and the timestep helpers for one config. Immutable.
class NoiseSchedule {
 public:
  /// ASD_ERR_INVALID_ARGUMENT for num_train_timesteps < 1.
  explicit NoiseSchedule(const NoiseScheduleConfig& config);

  const NoiseScheduleConfig& config() const { return config_; }
  /// [T] float32: linear = linspace(beta_start, beta_end, T); scaled_linear = linspace(sqrt(beta_start),
  /// sqrt(beta_end), T)^2 (computed in float32, as diffusers does).
  const torch::Tensor& betas() const { return betas_; }
  /// [T] float32: cumprod(1 - betas).
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  /// alphas_cumprod[t] as a double (the float32 value, widened). ASD_ERR_INVALID_ARGUMENT outside [0, T).
  double alpha_cumprod(int64_t t) const;

  /// The inference timesteps for `num_inference_steps` in [1, T] ([n] int64, descending), diffusers'
  /// set_timesteps with the config's timestep_spacing:
  ///   leading : (arange(n) * (T // n)).round()[::-1] + steps_offset
  ///   trailing: round(arange(T, 0, -T / n)) - 1
  ///   linspace: linspace(0, T - 1, n).round()[::-1]
  /// (np.round rounds half to even; so does this.) ASD_ERR_INVALID_ARGUMENT for n outside [1, T].
  torch::Tensor timesteps(int64_t num_inference_steps) const;

  /// Forward process q(x_t | x_0) (diffusers add_noise):
  ///   sqrt(acp[t]) * original_samples + sqrt(1 - acp[t]) * noise
  /// original_samples, noise: [B, ...] (same shape); timesteps: int64 [B] (one per sample) or a 0-dim /
  /// one-element tensor (all samples). Computed in the samples' dtype and device.
  torch::Tensor add_noise(const torch::Tensor& original_samples, const torch::Tensor& noise, const torch::Tensor& timesteps) const;

  /// The v-prediction training target (diffusers get_velocity, Salimans & Ho 2022):
  ///   sqrt(acp[t]) * noise - sqrt(1 - acp[t]) * sample
  /// Shapes as add_noise.
  torch::Tensor get_velocity(const torch::Tensor& sample, const torch::Tensor& noise, const torch::Tensor& timesteps) const;

 private:
  /// acp[timesteps] reshaped to broadcast against `like` ([B, 1, 1, ...]), in like's dtype/device.
  torch::Tensor gather_alphas(const torch::Tensor& timesteps, const torch::Tensor& like) const;

  NoiseScheduleConfig config_;
  torch::Tensor betas_;
  torch::Tensor alphas_cumprod_;
};

/// x0_hat and eps_hat from a model output (diffusers' three prediction types).
/// a_t = alphas_cumprod[t]. For kSample the epsilon is (sample - sqrt(a_t) x0) / sqrt(1 - a_t).
struct Prediction {
  torch::Tensor original_sample;
  torch::Tensor epsilon;
};
Prediction split_prediction(PredictionType type, const torch::Tensor& model_output, const torch::Tensor& sample, double alpha_prod_t);

/// The img2img / inpainting strength rule (diffusers 0.21 StableDiffusionInpaintPipeline.get_timesteps):
///   init_timestep = min(int(N * noise_strength), N); t_start = max(N - init_timestep, 0)
///   returns timesteps[t_start:]   (N = timesteps.size(0); scheduler order 1)
/// noise_strength (lambda) in [0, 1]: 1 runs every step from pure noise, 0 runs none (empty result).
/// ASD_ERR_INVALID_ARGUMENT for a strength outside [0, 1] or timesteps that are not 1-D.
torch::Tensor timesteps_for_strength(const torch::Tensor& timesteps, double noise_strength);

/// The index t_start of the rule above (for callers that need it, e.g. to report progress).
int64_t strength_start_index(int64_t num_inference_steps, double noise_strength);

}  // namespace asd::schedulers
