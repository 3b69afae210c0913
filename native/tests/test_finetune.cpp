// Fine-tuning (section 4.1): batches, UNet loss (eq. 8), decoder loss (eq. 9), exact resume.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "pipeline/finetune.h"
#include "pipeline/sd_pipeline.h"
#include "test_util.h"

using namespace asd::pipeline;

namespace {

// Two categories of 32x32 images: a bright square object on dark ground, and a striped texture.
std::vector<CategoryShots> tiny_data() {
  torch::manual_seed(3);
  CategoryShots object{"object", torch::full({2, 3, 32, 32}, -0.8f), torch::zeros({2, 1, 32, 32}), torch::randint(0, 49408, {2, 77}, torch::kInt64)};
  object.images.narrow(2, 8, 16).narrow(3, 8, 16).fill_(0.6f);
  object.foregrounds.narrow(2, 8, 16).narrow(3, 8, 16).fill_(1.0f);
  CategoryShots texture{"texture", torch::zeros({1, 3, 32, 32}), torch::ones({1, 1, 32, 32}), torch::randint(0, 49408, {3, 77}, torch::kInt64)};
  texture.images.copy_(torch::sin(torch::arange(32).to(torch::kFloat32) * 0.8).view({1, 1, 1, 32}).expand({1, 3, 32, 32}));
  return {object, texture};
}

FinetuneOptions tiny_options() {
  FinetuneOptions o;
  o.batch_size = 4;
  o.learning_rate = 1e-3;
  o.seed = 11;
  return o;
}

bool same_parameters(const torch::nn::Module& a, const torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  for (const auto& p : pa) {
    if (!torch::equal(p.value(), pb[p.key()])) return false;
  }
  return true;
}

/// MSE of D(mean E(x)) against x.
double reconstruction_mse(SdComponents& c, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return torch::mse_loss(c.vae->decode(c.vae->encode(x).first), x).item<double>();
}

/// Runs `steps` trainer steps; returns the summed losses of the first and of the last `window` steps.
template <typename Trainer>
std::pair<double, double> first_and_last_losses(Trainer& trainer, int steps, int window) {
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i) losses.push_back(trainer.step());
  double first = 0, last = 0;
  for (int i = 0; i < window; ++i) {
    first += losses[static_cast<size_t>(i)];
    last += losses[losses.size() - 1 - static_cast<size_t>(i)];
  }
  return {first, last};
}

}  // namespace

TEST(Finetune, BatchesCycleCategoriesAndAugmentJointly) {
  const auto data = tiny_data();
  auto gen = at::detail::createCPUGenerator(5);
  std::mt19937_64 rng(5);
  AugmentOptions none;
  none.brightness = none.contrast = none.rotation_degrees = 0;
  none.scale_min = none.scale_max = 1;
  const TrainingBatch b = draw_batch(data, 4, 0, none, gen, rng);
  EXPECT_EQ(b.categories, (std::vector<int64_t>{0, 1, 0, 1}));  // every category in every step
  // Without augmentation the batch is the shots themselves (identity grid, align_corners false).
  EXPECT_LT(asd::test::max_abs_error(b.images[1], data[1].images[0]), 1e-5);
  EXPECT_TRUE(torch::equal(b.foregrounds[0], data[0].foregrounds[0]));
  // With rotation, the object's foreground mask moves with the object: inside the mask the pixels stay bright.
  AugmentOptions rot;
  rot.rotation_degrees = 30;
  rot.brightness = rot.contrast = 0;
  const TrainingBatch r = draw_batch(data, 2, 0, rot, gen, rng);
  const auto inside = r.images[0].mean(0).masked_select(r.foregrounds[0][0] > 0.5);
  EXPECT_GT(inside.mean().item<float>(), 0.3f);
}

TEST(Finetune, UNetLossDecreasesOnFixedProbe) {
  SdComponents c = compact_preset(1);
  UNetFinetuner trainer(c, tiny_data(), tiny_options());
  // The same step index replays the same randomness: the loss of step 0's batch before and after training.
  const auto [first, last] = first_and_last_losses(trainer, 40, 8);
  std::cout << "UNet loss: first 8 steps " << first / 8 << ", last 8 steps " << last / 8 << "\n";
  EXPECT_LT(last, first * 0.8) << "the ε-prediction loss (eq. 8) must fall when training on two images";
  EXPECT_EQ(trainer.steps_done(), 40);
}

TEST(Finetune, ResumeIsExact) {
  asd::test::TempDir dir;
  const std::string opt = (dir.path() / "optimizer.pt").string();
  SdComponents straight = compact_preset(2);
  UNetFinetuner a(straight, tiny_data(), tiny_options());
  for (int i = 0; i < 3; ++i) a.step();

  SdComponents first = compact_preset(2);
  UNetFinetuner b(first, tiny_data(), tiny_options());
  b.step();
  save_folder(first, (dir.path() / "ckpt").string());
  b.save_optimizer(opt);

  SdComponents resumed = load_diffusers_folder((dir.path() / "ckpt").string());
  UNetFinetuner c(resumed, tiny_data(), tiny_options());
  c.load_optimizer(opt, 1);
  c.step();
  c.step();
  EXPECT_TRUE(same_parameters(*straight.unet, *resumed.unet)) << "1 step + save + load + 2 steps must equal 3 steps";
}

TEST(Finetune, DecoderReconstructionImproves) {
  SdComponents c = compact_preset(4);
  auto data = tiny_data();
  // A toy perceptual term (per-sample mean absolute difference) stands in for LPIPS here.
  PerceptualLoss l1 = [](const torch::Tensor& x, const torch::Tensor& y) { return (x - y).abs().mean({1, 2, 3}); };
  auto recon_error = [&] { return reconstruction_mse(c, data[0].images); };
  const double before = recon_error();
  FinetuneOptions o = tiny_options();
  o.learning_rate = 2e-3;
  DecoderFinetuner trainer(c, data, o, l1, 0.1, /*train_encoder=*/true);
  for (int i = 0; i < 30; ++i) trainer.step();
  const double after = recon_error();
  std::cout << "VAE reconstruction MSE: before " << before << ", after 30 steps " << after << "\n";
  EXPECT_LT(after, before * 0.5);
  const double s = latent_scaling_factor(c, data);
  EXPECT_GT(s, 0);
}

TEST(Finetune, DecoderOnlyLeavesEncoderFrozen) {
  SdComponents c = compact_preset(5);
  const auto enc_before = c.vae->named_parameters()["encoder.conv_in.weight"].clone();
  const auto dec_before = c.vae->named_parameters()["decoder.conv_in.weight"].clone();
  DecoderFinetuner trainer(c, tiny_data(), tiny_options(), {}, 0.0, /*train_encoder=*/false);
  trainer.step();
  EXPECT_TRUE(torch::equal(enc_before, c.vae->named_parameters()["encoder.conv_in.weight"]));
  EXPECT_FALSE(torch::equal(dec_before, c.vae->named_parameters()["decoder.conv_in.weight"]));
}

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "pipeline/checkpoint.h"

TEST(Checkpoint, RoundTripManifestAndAtomicReplace) {
  asd::test::TempDir dir;
  const std::string ckpt = (dir.path() / "model").string();
  SdComponents c = compact_preset(9);
  const nlohmann::json meta = {{"categories", {{{"name", "bottle"}, {"noise_strength", 0.4}}}}};
  save_checkpoint(c, ckpt, meta, {{"unet_steps", 3}});
  ASSERT_TRUE(is_checkpoint(ckpt));
  const auto m = read_checkpoint_manifest(ckpt);
  EXPECT_EQ(m["metadata"], meta);
  EXPECT_EQ(m["training"]["unet_steps"], 3);
  EXPECT_EQ(m["engine_version"], ANOMALYSD_VERSION);
  check_architecture(m, architecture_fingerprint(c), ckpt);  // same architecture: no error
  SdComponents loaded = load_diffusers_folder(ckpt);
  EXPECT_EQ(architecture_fingerprint(loaded), architecture_fingerprint(c));

  // A failing save (the extra-files hook throws) leaves the previous checkpoint intact and no staging dir.
  EXPECT_THROW(save_checkpoint(c, ckpt, {{"x", 1}}, {}, [](const std::string&) { throw asd::Error(ASD_ERR_IO, "disk full"); }), asd::Error);
  EXPECT_EQ(read_checkpoint_manifest(ckpt)["metadata"], meta);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()), 1);
}

TEST(Checkpoint, MismatchedOrIncompatibleCheckpointsFailClearly) {
  asd::test::TempDir dir;
  const std::string ckpt = (dir.path() / "model").string();
  SdComponents c = compact_preset(9);
  save_checkpoint(c, ckpt, nlohmann::json::object());
  auto manifest = read_checkpoint_manifest(ckpt);
  try {
    check_architecture(manifest, "0123456789abcdef", ckpt);
    FAIL();
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("made for another architecture"), std::string::npos) << e.what();
  }
  // Another architecture really has another fingerprint.
  SdComponents other = compact_preset(9);
  other.unet_config["block_out_channels"] = {32, 64, 64};
  EXPECT_NE(architecture_fingerprint(other), architecture_fingerprint(c));

  manifest["format_version"] = 99;
  std::ofstream(std::filesystem::path(ckpt) / "anomalysd.json") << manifest.dump();
  try {
    read_checkpoint_manifest(ckpt);
    FAIL();
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("format_version 99"), std::string::npos) << e.what();
  }
  std::ofstream(std::filesystem::path(ckpt) / "anomalysd.json") << "{ truncated";
  try {
    read_checkpoint_manifest(ckpt);
    FAIL();
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_FORMAT);
    EXPECT_NE(std::string(e.what()).find("anomalysd.json"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------ mixed precision

#include <limits>

#include "core/mixed_precision.h"

TEST(MixedPrecision, AutocastGuardCastsMatmulsAndRestoresState) {
  const auto a = torch::randn({4, 8}), b = torch::randn({8, 3});
  EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat32);
  {
    asd::AutocastGuard guard(torch::kCPU, asd::MixedPrecision::kBF16);
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16) << "bf16 autocast runs matmuls in bfloat16";
    // bf16 keeps 8 mantissa bits: each product is within ~2^-8 relative of fp32's.
    const auto exact = torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64));
    EXPECT_LT((torch::mm(a, b).to(torch::kFloat64) - exact).abs().max().item<double>(), 0.02 * (a.abs().mm(b.abs())).max().item<double>());
  }
  EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat32) << "the guard restores full precision";
  { asd::AutocastGuard none(torch::kCPU, asd::MixedPrecision::kNone); EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat32); }
}

TEST(MixedPrecision, ParseAndDeviceChecks) {
  EXPECT_EQ(asd::parse_mixed_precision("bf16"), asd::MixedPrecision::kBF16);
  EXPECT_EQ(asd::parse_mixed_precision("no"), asd::MixedPrecision::kNone);
  EXPECT_THROW(asd::parse_mixed_precision("fp8"), asd::Error);
  EXPECT_THROW(asd::check_mixed_precision(asd::MixedPrecision::kFP16, torch::kCPU, torch::kFloat32), asd::Error);
  EXPECT_THROW(asd::check_mixed_precision(asd::MixedPrecision::kBF16, torch::kCPU, torch::kBFloat16), asd::Error);
  EXPECT_NO_THROW(asd::check_mixed_precision(asd::MixedPrecision::kBF16, torch::kCPU, torch::kFloat32));
}

TEST(MixedPrecision, LossScalerFollowsGradScalerRule) {
  asd::LossScaler scaler(true, 1024.0, /*growth_interval=*/2);
  auto p = torch::zeros({3}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({1024.0f, -2048.0f, 512.0f});
  EXPECT_TRUE(scaler.unscale_and_check({p}));
  EXPECT_TRUE(torch::equal(p.grad(), torch::tensor({1.0f, -2.0f, 0.5f}))) << "gradients are divided by the scale";
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 1024.0);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 2048.0) << "doubles after growth_interval finite steps";
  p.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 0.0f});
  EXPECT_FALSE(scaler.unscale_and_check({p}));
  scaler.update(false);
  EXPECT_EQ(scaler.scale(), 1024.0) << "halves on overflow";
  EXPECT_EQ(scaler.growth_tracker(), 0);
  asd::LossScaler off(false);
  p.mutable_grad() = torch::tensor({4.0f, 5.0f, 6.0f});
  EXPECT_TRUE(off.unscale_and_check({p}));
  EXPECT_TRUE(torch::equal(p.grad(), torch::tensor({4.0f, 5.0f, 6.0f}))) << "a disabled scaler leaves gradients alone";
}

TEST(MixedPrecision, CpuBf16TrainingGuardSwitchesOneDnnOffOnlyUnderLibtorch2AndRestoresIt) {
  const bool before = at::globalContext().userEnabledMkldnn();
  {
    const asd::CpuBf16TrainingGuard guard(torch::kCPU, asd::MixedPrecision::kBF16);
    EXPECT_EQ(at::globalContext().userEnabledMkldnn(), TORCH_VERSION_MAJOR >= 2 ? false : before);
  }
  EXPECT_EQ(at::globalContext().userEnabledMkldnn(), before) << "restored";
  {
    const asd::CpuBf16TrainingGuard none(torch::kCPU, asd::MixedPrecision::kNone);
    EXPECT_EQ(at::globalContext().userEnabledMkldnn(), before) << "fp32 training keeps oneDNN";
  }
}

TEST(MixedPrecision, Bf16UNetTrainingKeepsFp32WeightsAndLearns) {
  SdComponents c = compact_preset(1);
  FinetuneOptions o = tiny_options();
  o.mixed_precision = asd::MixedPrecision::kBF16;
  UNetFinetuner trainer(c, tiny_data(), o);
  const auto [first, last] = first_and_last_losses(trainer, 40, 8);
  std::cout << "bf16 UNet loss: first 8 steps " << first / 8 << ", last 8 steps " << last / 8 << "\n";
  EXPECT_LT(last, first * 0.8);
  for (const auto& p : c.unet->parameters()) ASSERT_EQ(p.scalar_type(), torch::kFloat32) << "master weights stay fp32";
  // The bf16 run follows the fp32 run's first step closely (same batch, same noise): loss within bf16 rounding.
  SdComponents c32 = compact_preset(1), c16 = compact_preset(1);
  UNetFinetuner full(c32, tiny_data(), tiny_options());
  UNetFinetuner mixed(c16, tiny_data(), o);
  const double l32 = full.step(), l16 = mixed.step();
  std::cout << "step-0 loss fp32 " << l32 << ", bf16 autocast " << l16 << "\n";
  EXPECT_NEAR(l16, l32, 0.05 * l32);
}

TEST(MixedPrecision, Bf16DecoderTrainingReducesReconstructionError) {
  SdComponents c = compact_preset(4);
  auto data = tiny_data();
  auto recon_error = [&] { return reconstruction_mse(c, data[0].images); };
  const double before = recon_error();
  FinetuneOptions o = tiny_options();
  o.learning_rate = 2e-3;
  o.mixed_precision = asd::MixedPrecision::kBF16;
  DecoderFinetuner trainer(c, data, o, {}, 0.0, /*train_encoder=*/true);
  for (int i = 0; i < 30; ++i) trainer.step();
  const double after = recon_error();
  std::cout << "bf16 VAE reconstruction MSE: before " << before << ", after 30 steps " << after << "\n";
  EXPECT_LT(after, before * 0.5);
}

TEST(MixedPrecision, Fp16OnCpuAndBf16WeightsAreRefused) {
  SdComponents c = compact_preset(1);
  FinetuneOptions o = tiny_options();
  o.mixed_precision = asd::MixedPrecision::kFP16;
  EXPECT_THROW(UNetFinetuner(c, tiny_data(), o), asd::Error);
}

TEST(MixedPrecision, Fp16UNetTrainingOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  SdComponents c = compact_preset(1);
  c.to(torch::kCUDA, torch::kFloat32);
  FinetuneOptions o = tiny_options();
  o.mixed_precision = asd::MixedPrecision::kFP16;
  UNetFinetuner trainer(c, tiny_data(), o);
  const auto [first, last] = first_and_last_losses(trainer, 40, 8);
  ASSERT_TRUE(std::isfinite(first) && std::isfinite(last));
  std::cout << "fp16 (CUDA) UNet loss: first 8 steps " << first / 8 << ", last 8 steps " << last / 8 << "\n";
  EXPECT_LT(last, first * 0.8);
}
