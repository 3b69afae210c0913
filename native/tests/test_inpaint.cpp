// The compact preset, diffusers folders (save -> load), and batched inpainting (section 4.2).
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/attention.h"
#include "pipeline/inpaint.h"
#include "pipeline/sd_pipeline.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace asd::pipeline;

namespace {

// A 32x32 image (8x8 latents with the compact VAE's factor 4) and four masks: two grid cells, the whole
// image, and nothing.
struct Fixture {
  SdComponents c = compact_preset(7);
  torch::Tensor image = torch::rand({3, 32, 32}, torch::TensorOptions().dtype(torch::kFloat32)) * 2 - 1;
  torch::Tensor masks = torch::zeros({4, 1, 32, 32});
  torch::Tensor tokens = torch::randint(0, 49408, {2, 77}, torch::kInt64);
  Fixture() {
    masks[0].narrow(1, 0, 16).narrow(2, 0, 16).fill_(1);
    masks[1].narrow(1, 16, 16).narrow(2, 16, 16).fill_(1);
    masks[2].fill_(1);
  }
  InpaintOptions options(int64_t steps = 10, double strength = 0.4) const {
    InpaintOptions o;
    o.num_inference_steps = steps;
    o.noise_strength = strength;
    o.seed = 123;
    return o;
  }
};

}  // namespace

TEST(Inpaint, CompactPresetShapes) {
  Fixture f;
  EXPECT_EQ(f.c.vae_scale_factor(), 4);
  EXPECT_EQ(f.c.latent_channels(), 4);
  EXPECT_EQ(f.c.unet->config().in_channels, 9);
  std::cout << "compact parameters: unet " << parameter_count(*f.c.unet) << ", vae " << parameter_count(*f.c.vae) << ", text encoder "
            << parameter_count(*f.c.text_encoder) << "\n";
  const auto ctx = average_prompt_embedding(f.c, f.tokens);
  EXPECT_EQ(ctx.sizes(), torch::IntArrayRef({1, 77, 64}));
  // The average of the per-prompt embeddings (section 4.2), checked against an explicit mean.
  torch::NoGradGuard ng;
  const auto each = f.c.text_encoder->forward(f.tokens);
  EXPECT_LT(asd::test::max_abs_error(ctx[0], (each[0] + each[1]) / 2), 1e-6);
}

TEST(Inpaint, SameSeedSameOutputAndBatchSizeDoesNotMatter) {
  Fixture f;
  const auto ctx = average_prompt_embedding(f.c, f.tokens);
  auto o = f.options();
  o.batch_size = 4;
  const auto a = inpaint(f.c, f.image, f.masks, ctx, o);
  const auto b = inpaint(f.c, f.image, f.masks, ctx, o);
  EXPECT_TRUE(torch::equal(a, b)) << "same seed must give the same output on the CPU";
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({4, 3, 32, 32}));
  EXPECT_LE(a.abs().max().item<float>(), 1.0f);
  o.batch_size = 1;
  const auto one_by_one = inpaint(f.c, f.image, f.masks, ctx, o);
  const double diff = asd::test::max_abs_error(a, one_by_one);
  std::cout << "batch 4 vs batch 1 max abs difference: " << diff << "\n";
  EXPECT_LT(diff, 1e-4);
  o.seed = 124;
  EXPECT_GT(asd::test::max_abs_error(inpaint(f.c, f.image, f.masks, ctx, o), a), 1e-3) << "another seed must change the noise";
}

TEST(Inpaint, BatchedEqualsNaiveReference) {
  Fixture f;
  const auto o = f.options(8, 0.5);
  const auto batched = inpaint(f.c, f.image, f.masks, average_prompt_embedding(f.c, f.tokens), o);
  const auto naive = inpaint_naive(f.c, f.image, f.masks, f.tokens, o);
  const double diff = asd::test::max_abs_error(batched, naive);
  std::cout << "batched vs naive max abs difference: " << diff << "\n";
  EXPECT_LT(diff, 1e-4);
}

TEST(Inpaint, ZeroDenoisingStepsIsAnError) {
  // 15 steps x λ 0.05 = int(0.75) = 0 steps: every "inpainting" would silently be the VAE reconstruction, so it is refused
  // before any work (diffusers refuses too), naming both values and the smallest λ that gives one step (1/15).
  Fixture f;
  const auto ctx = average_prompt_embedding(f.c, f.tokens);
  for (double strength : {0.05, 0.0}) {
    try {
      inpaint(f.c, f.image, f.masks, ctx, f.options(15, strength));
      ADD_FAILURE() << "expected an error for strength " << strength;
    } catch (const asd::Error& e) {
      EXPECT_EQ(e.status(), ASD_ERR_INVALID_ARGUMENT);
      const std::string m = e.what();
      EXPECT_NE(m.find("num_inference_steps 15 leaves 0 denoising steps"), std::string::npos) << m;
      EXPECT_NE(m.find("noise_strength >= 0.0666667"), std::string::npos) << m;
    }
  }
  EXPECT_THROW(inpaint_naive(f.c, f.image, f.masks, f.tokens, f.options(15, 0.05)), asd::Error);
  EXPECT_NO_THROW(inpaint(f.c, f.image, f.masks.narrow(0, 0, 1), ctx, f.options(15, 1.0 / 15 + 1e-9)));
}

TEST(Inpaint, FullStrengthStartsFromPureNoise) {
  // λ = 1 starts from ε alone (diffusers' is_strength_max). Under a whole-image mask the masked image (1 - m) ⊙ x is 0 for
  // any x, so an image and its negative must give the same inpainting; add_noise at t = 981 would keep sqrt(ᾱ) ≈ 7.6 %
  // of each image's latents and make them differ.
  Fixture f;
  const auto ctx = average_prompt_embedding(f.c, f.tokens);
  const auto whole = f.masks.narrow(0, 2, 1);
  const auto a = inpaint(f.c, f.image, whole, ctx, f.options(10, 1.0));
  const auto b = inpaint(f.c, -f.image, whole, ctx, f.options(10, 1.0));
  EXPECT_TRUE(torch::equal(a, b)) << "max difference " << asd::test::max_abs_error(a, b);
  const auto naive = inpaint_naive(f.c, -f.image, whole, f.tokens, f.options(10, 1.0));
  EXPECT_LT(asd::test::max_abs_error(a, naive), 1e-5);
  // Below 1 the image still shows through.
  const auto c = inpaint(f.c, f.image, whole, ctx, f.options(10, 0.9));
  const auto d = inpaint(f.c, -f.image, whole, ctx, f.options(10, 0.9));
  EXPECT_GT(asd::test::max_abs_error(c, d), 1e-4);
}

TEST(Inpaint, RejectsBadInputs) {
  Fixture f;
  const auto ctx = average_prompt_embedding(f.c, f.tokens);
  auto expect_invalid = [&](const torch::Tensor& image, const torch::Tensor& masks, const InpaintOptions& o, const std::string& text) {
    try {
      inpaint(f.c, image, masks, ctx, o);
      ADD_FAILURE() << "expected an error containing '" << text << "'";
    } catch (const asd::Error& e) {
      EXPECT_EQ(e.status(), ASD_ERR_INVALID_ARGUMENT);
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_invalid(f.image, torch::zeros({2, 1, 16, 16}), f.options(), "masks must be [M, 1, H, W]");
  expect_invalid(torch::zeros({3, 30, 30}), torch::zeros({1, 1, 30, 30}), f.options(), "multiples of the VAE factor 4");
  expect_invalid(f.image, f.masks, f.options(10, 1.5), "noise_strength must be in [0, 1]");
  expect_invalid(f.image, f.masks, f.options(0, 0.4), "num_inference_steps must be in [1, 1000]");
}

TEST(Inpaint, BatchSizeFromMemoryIsClamped) {
  Fixture f;
  EXPECT_GT(estimate_bytes_per_mask(f.c, 128, 128), estimate_bytes_per_mask(f.c, 64, 64));
  const int64_t b = choose_batch_size(f.c, 128, 128, 86);
  EXPECT_GE(b, 1);
  EXPECT_LE(b, 86);
  if (!f.c.device.is_cuda()) {  // (the memory bound, available / 2 / ~7 MB per mask, is far above 32 here)
    // CPU rule with the compact UNet (64 channels at the latent resolution, fp32): 2 MiB / (64 x 16 x 16 x 4 B) = 32
    // masks at 64x64, 2 MiB / (64 x 32 x 32 x 4 B) = 8 at 128x128, and never more than there are masks.
    EXPECT_EQ(choose_batch_size(f.c, 64, 64, 86), 32);
    EXPECT_EQ(choose_batch_size(f.c, 128, 128, 86), 8);
    EXPECT_EQ(choose_batch_size(f.c, 64, 64, 5), 5);
  }
}

TEST(Inpaint, BatchMemoryEstimateCountsScoreMatricesOnlyForTheManualAttention) {
  Fixture f;
  int64_t manual = 0;
  {
    asd::models::ScopedAttentionKernel use(asd::models::AttentionKernel::kManual);
    manual = estimate_bytes_per_mask(f.c, 64, 64);
  }
  // Compact at 64x64: 16x16 latents; cross-attention levels 1 and 2 at 8x8 and 4x4 positions, 4 heads, fp32: scores
  // and probabilities 2 x 4 x (64² + 16²) x 4 B = 139,264 B per mask.
  for (const auto kernel : asd::models::available_attention_kernels()) {
    asd::models::ScopedAttentionKernel use(kernel);
    EXPECT_EQ(manual - estimate_bytes_per_mask(f.c, 64, 64), kernel == asd::models::AttentionKernel::kFused ? 139264 : 0);
  }
}

TEST(DiffusersFolder, SaveLoadRoundTripKeepsOutputs) {
  asd::test::TempDir dir;
  Fixture f;
  f.c.scaling_factor = 0.5;  // written into vae/config.json and read back
  save_folder(f.c, dir.path().string(), {{"anomalysd_note", "test"}});
  for (const char* file : {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                           "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
                           "scheduler/scheduler_config.json"}) {
    EXPECT_TRUE(fs::exists(dir.path() / file)) << file;
  }
  SdComponents loaded = load_diffusers_folder(dir.path().string());
  EXPECT_EQ(loaded.scaling_factor, 0.5);
  const auto o = f.options(4, 0.5);
  const auto a = inpaint(f.c, f.image, f.masks, average_prompt_embedding(f.c, f.tokens), o);
  const auto b = inpaint(loaded, f.image, f.masks, average_prompt_embedding(loaded, f.tokens), o);
  EXPECT_TRUE(torch::equal(a, b)) << "a saved and reloaded model must give bit-identical inpaintings";
}

TEST(DiffusersFolder, ErrorsNameFileKeyAndShape) {
  asd::test::TempDir dir;
  Fixture f;
  save_folder(f.c, dir.path().string());
  const fs::path unet_weights = dir.path() / "unet" / "diffusion_pytorch_model.safetensors";
  auto expect_error = [&](asd_status status, const std::vector<std::string>& parts) {
    try {
      load_diffusers_folder(dir.path().string());
      ADD_FAILURE() << "expected an error";
    } catch (const asd::Error& e) {
      EXPECT_EQ(e.status(), status) << e.what();
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' missing in: " << e.what();
    }
  };
  asd::TensorMap w = asd::safetensors::load(unet_weights.string());

  // A wrong shape: the key, the expected and the found shape.
  asd::TensorMap wrong;
  for (size_t i = 0; i < w.size(); ++i) wrong.set(w.names()[i], w.names()[i] == "conv_in.bias" ? torch::zeros({7}) : w.tensor(i));
  asd::safetensors::save(unet_weights.string(), wrong);
  expect_error(ASD_ERR_FORMAT, {unet_weights.string(), "conv_in.bias", "[7]", "expected [64]"});

  // A missing key.
  asd::TensorMap missing;
  for (size_t i = 0; i < w.size(); ++i) {
    if (w.names()[i] != "conv_out.weight") missing.set(w.names()[i], w.tensor(i));
  }
  asd::safetensors::save(unet_weights.string(), missing);
  expect_error(ASD_ERR_NOT_FOUND, {"missing key 'conv_out.weight'", "[4, 64, 3, 3]"});

  // An unsupported config value names the key; a text-to-image UNet (4 channels) is refused.
  asd::safetensors::save(unet_weights.string(), w);
  auto config = compact_unet_config();
  config["resnet_time_scale_shift"] = "scale_shift";
  std::ofstream(dir.path() / "unet" / "config.json") << config.dump();
  expect_error(ASD_ERR_UNSUPPORTED, {"resnet_time_scale_shift"});
  config = compact_unet_config();
  config["in_channels"] = 4;
  std::ofstream(dir.path() / "unet" / "config.json") << config.dump();
  expect_error(ASD_ERR_UNSUPPORTED, {"in_channels", "9 input channels"});

  fs::remove(dir.path() / "vae" / "diffusion_pytorch_model.safetensors");
  std::ofstream(dir.path() / "unet" / "config.json") << compact_unet_config().dump();
  expect_error(ASD_ERR_IO, {"missing weights file", "vae"});
  fs::remove(dir.path() / "model_index.json");
  expect_error(ASD_ERR_IO, {"missing model_index.json"});
}
