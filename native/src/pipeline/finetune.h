// Fine-tuning (paper section 4.1): the denoising UNet on the few shots of every category at once (eq. 7-8),
// and the VAE decoder with MSE + β·perceptual loss (eq. 9-10). For the `compact` preset, which has no
// pretrained VAE, the whole autoencoder is first trained from scratch with the same reconstruction loss.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/mixed_precision.h"
#include "io/tensor_map.h"
#include "pipeline/sd_pipeline.h"
#include "pipeline/training_masks.h"
#include "pipeline/windows.h"

namespace asd::pipeline {

/// The few shots of one category.
struct CategoryShots {
  std::string name;
  torch::Tensor images;       ///< [K, 3, H, W] in [-1, 1], K >= 1
  torch::Tensor foregrounds;  ///< [K, 1, H, W] in {0, 1}: m_f (all ones for textures)
  torch::Tensor prompt_ids;   ///< [P, 77] int64: the tokenised prompt set T_c = T¹_c ∪ T²_c
};

struct AugmentOptions {
  double brightness = 0.1;      ///< additive shift, uniform in [-b, b] (images in [-1, 1])
  double contrast = 0.1;        ///< gain uniform in [1 - c, 1 + c] around the image mean
  double scale_min = 0.9, scale_max = 1.1;  ///< zoom
  double rotation_degrees = 10; ///< uniform in [-r, r]
};

struct FinetuneOptions {
  int64_t batch_size = 8;
  int64_t gradient_accumulation = 1;  ///< micro-batches per optimizer step
  double learning_rate = 1e-4;        ///< Adam (section 5.1)
  uint64_t seed = 0;
  /// Autocast precision of the forward passes (weights stay in the model dtype, which must then be F32): kBF16
  /// on CPU or CUDA, kFP16 on CUDA only (with dynamic loss scaling). The paper trains in fp32 on an RTX 3090.
  MixedPrecision mixed_precision = MixedPrecision::kNone;
  AugmentOptions augment;
  TrainingMaskOptions masks;
  /// Fine-tuning sees what inference asks (multi-resolution scoring): the shots come at the analysis resolution,
  /// each training mask gets the window inference would give it (pipeline/windows.h), and the window is resampled
  /// to windows.inpaint_size. Full context: the whole shot, resampled to inpaint_size (0: as given).
  WindowOptions windows;
};

/// Draws a training batch: images of every category in turn (sample i of a step comes from category
/// (step·B + i) mod C), a random shot of it, jointly augmented with its foreground (same rotation/scale;
/// brightness/contrast on the image only). Returns images [B,3,H,W], foregrounds [B,1,H,W] and the category
/// index of each sample.
struct TrainingBatch {
  torch::Tensor images, foregrounds;
  std::vector<int64_t> categories;
};
TrainingBatch draw_batch(const std::vector<CategoryShots>& data, int64_t batch_size, int64_t step, const AugmentOptions& augment,
                         torch::Generator& generator, std::mt19937_64& rng);

/// Training samples at the inpainting resolution: for each image of `batch` (at the shots' resolution) a training
/// mask (eq. 7-8's IoU-accepted rectangle, drawn at that resolution), its inference window (windows.h) and the
/// window's crop of image and mask, resampled to windows.inpaint_size (image: bilinear; mask: any coverage).
/// With `draw_masks` false and full context no rectangle is drawn: the whole images, resampled (decoder losses).
struct WindowedBatch {
  torch::Tensor images;  ///< [B, 3, P, P]
  torch::Tensor masks;   ///< [B, 1, P, P] in {0, 1} (undefined without masks)
};
WindowedBatch window_batch(const TrainingBatch& batch, std::mt19937_64& rng, const TrainingMaskOptions& masks, const WindowOptions& windows,
                           bool draw_masks);

/// UNet fine-tuning, eq. 7-8: z = s·E(x), z° = s·E((1 - m) ⊙ x), m the IoU-accepted rectangle, m̃ its
/// latent-size downsample, t ~ U{0..T-1}, z_t = sqrt(ᾱ_t) z + sqrt(1 - ᾱ_t) ε, prediction
/// ε_θ([z_t; z°; m̃], t, τ(y)) with y a random prompt of the sample's category, loss ‖ε - ε_θ‖² (the
/// v-target sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) z for v_prediction models). The VAE and text encoder stay frozen;
/// prompt embeddings are computed once.
class UNetFinetuner {
 public:
  UNetFinetuner(SdComponents& components, std::vector<CategoryShots> data, const FinetuneOptions& options);

  /// One optimizer step (gradient_accumulation micro-batches); returns the mean loss of the step. With fp16 a
  /// step whose gradients overflow is skipped (weights unchanged, loss scale halved) but still counted.
  double step();
  int64_t steps_done() const { return steps_done_; }

  /// Writes the optimizer state (Adam moments, libtorch's serialization, plus the fp16 loss scale) atomically to `path`. Together with
  /// the weights and steps_done() it resumes training exactly: every step's randomness is derived from
  /// (seed, step index), not from a running generator.
  void save_optimizer(const std::string& path) const;
  /// Restores save_optimizer's file and continues at step `steps_done`. ASD_ERR_IO / ASD_ERR_FORMAT naming the file.
  void load_optimizer(const std::string& path, int64_t steps_done);

 private:
  SdComponents& c_;
  std::vector<CategoryShots> data_;
  FinetuneOptions options_;
  std::vector<torch::Tensor> prompt_embeddings_;  // per category [P, 77, D], frozen
  torch::optim::Adam optimizer_;
  LossScaler scaler_;
  int64_t steps_done_ = 0;
};

/// Perceptual distance used by the decoder loss: (x, x̂) in [-1, 1], [B,3,H,W] -> [B] (mean over pixels of
/// the eq. 16-17 map). Supplied by the backbone module (LPIPS with AlexNet, or the ResNet18 fallback).
using PerceptualLoss = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;

/// Decoder fine-tuning, eq. 9-10: L = ‖x - D(E(x))‖² + β·L_perceptual(x, D(E(x))), β = 0.1; only the
/// decoder (and post_quant_conv) are trained. With `train_encoder` (the compact preset, from scratch) the
/// encoder and quant_conv are trained too, plus a small KL term (weight 1e-6, as in SD's autoencoder).
class DecoderFinetuner {
 public:
  DecoderFinetuner(SdComponents& components, std::vector<CategoryShots> data, const FinetuneOptions& options, PerceptualLoss perceptual,
                   double beta = 0.1, bool train_encoder = false);
  double step();
  int64_t steps_done() const { return steps_done_; }

 private:
  SdComponents& c_;
  std::vector<CategoryShots> data_;
  FinetuneOptions options_;
  PerceptualLoss perceptual_;
  double beta_;
  bool train_encoder_;
  std::vector<torch::Tensor> params_;
  torch::optim::Adam optimizer_;
  LossScaler scaler_;
  int64_t steps_done_ = 0;
};

/// 1 / std of s=1 latents of the shots resampled to `inpaint_size` (0: as given) (the rule that gave SD its 0.18215),
/// for a VAE trained from scratch.
double latent_scaling_factor(SdComponents& components, const std::vector<CategoryShots>& data, int64_t inpaint_size = 0);

}  // namespace asd::pipeline
