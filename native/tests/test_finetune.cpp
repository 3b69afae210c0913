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
  std::vector<double> losses;
  for (int i = 0; i < 40; ++i) losses.push_back(trainer.step());
  double first = 0, last = 0;
  for (int i = 0; i < 8; ++i) {
    first += losses[i];
    last += losses[losses.size() - 1 - i];
  }
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
  auto recon_error = [&] {
    torch::NoGradGuard ng;
    const auto x = data[0].images;
    return torch::mse_loss(c.vae->decode(c.vae->encode(x).first), x).item<double>();
  };
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
