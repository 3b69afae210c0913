// AutoencoderKL: golden outputs of diffusers 0.21 (a random tiny 3-level VAE), the old attention key spelling
// with 1x1-conv weights, config and loading errors, and a save -> load round trip.
#include <iostream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/state_dict.h"
#include "models/attention.h"
#include "models/autoencoder_kl.h"
#include "test_util.h"

using asd::models::AutoencoderKL;

namespace {

std::string golden(const std::string& file) { return asd::test::shared_path("golden/vae_tiny/" + file); }

AutoencoderKL fresh_vae() { return asd::models::vae_from_config(asd::JsonConfig::load(golden("config.json"))); }

// Rewrites the mid-block attention keys to diffusers' pre-0.15 spelling with 1x1-conv weight shapes.
asd::TensorMap to_old_spelling(const asd::TensorMap& weights) {
  const std::vector<std::pair<std::string, std::string>> renames = {
      {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
  asd::TensorMap old;
  for (size_t i = 0; i < weights.size(); ++i) {
    std::string name = weights.names()[i];
    torch::Tensor t = weights.tensor(i);
    for (const auto& [from, to] : renames) {
      const size_t at = name.find(from);
      if (at == std::string::npos) continue;
      name = name.substr(0, at) + to + name.substr(at + from.size());
      if (t.dim() == 2) t = t.reshape({t.size(0), t.size(1), 1, 1});
    }
    old.set(name, t);
  }
  return old;
}

}  // namespace

// Under every attention kernel this libtorch has (models/attention.h): manual, and fused from 2.0.
TEST(VaeGolden, TinyEncodeDecodeMatchesDiffusers) {
  torch::NoGradGuard no_grad;
  AutoencoderKL vae = asd::models::load_vae(golden("config.json"), golden("weights.safetensors"));
  const asd::TensorMap io = asd::safetensors::load(golden("io.safetensors"));
  for (const auto kernel : asd::models::available_attention_kernels()) {
    asd::models::ScopedAttentionKernel use(kernel);
    const auto [mean, logvar] = vae->encode(io.at("image"));
    const torch::Tensor decoded = vae->decode(io.at("latents"));
    const double e_mean = asd::test::max_abs_error(mean, io.at("posterior_mean"));
    const double e_logvar = asd::test::max_abs_error(logvar, io.at("posterior_logvar"));
    const double e_dec = asd::test::max_abs_error(decoded, io.at("decoded"));
    std::cout << "  [vae_tiny, " << asd::models::to_string(kernel) << " attention] max abs error vs diffusers 0.21: posterior_mean "
              << e_mean << ", posterior_logvar " << e_logvar << ", decoded " << e_dec << "\n";
    EXPECT_LE(e_mean, 1e-4) << asd::models::to_string(kernel);
    EXPECT_LE(e_logvar, 1e-4) << asd::models::to_string(kernel);
    EXPECT_LE(e_dec, 1e-4) << asd::models::to_string(kernel);
  }
  EXPECT_GT(io.at("decoded").abs().max().item<double>(), 1e-2);
  EXPECT_DOUBLE_EQ(vae->scaling_factor(), 0.18215);  // from config.json, not applied by encode/decode
}

TEST(VaeLoad, OldAttentionSpellingWithConvShapedWeightsGivesTheSameOutput) {
  torch::NoGradGuard no_grad;
  const asd::TensorMap weights = asd::safetensors::load(golden("weights.safetensors"));
  const asd::TensorMap old = to_old_spelling(weights);
  ASSERT_TRUE(old.contains("decoder.mid_block.attentions.0.query.weight"));
  ASSERT_EQ(old.at("encoder.mid_block.attentions.0.proj_attn.weight").dim(), 4);
  ASSERT_FALSE(old.contains("encoder.mid_block.attentions.0.to_q.weight"));

  AutoencoderKL a = fresh_vae(), b = fresh_vae();
  asd::models::load_vae_weights(*a, weights);
  asd::models::load_vae_weights(*b, old);
  a->eval();
  b->eval();
  const asd::TensorMap io = asd::safetensors::load(golden("io.safetensors"));
  EXPECT_TRUE(torch::equal(a->encode(io.at("image")).first, b->encode(io.at("image")).first));
  EXPECT_TRUE(torch::equal(a->decode(io.at("latents")), b->decode(io.at("latents"))));

  // Without the remap the old spelling is a missing key: the remap is what makes the test pass.
  AutoencoderKL c = fresh_vae();
  try {
    asd::load_state_dict(*c, old);
    ADD_FAILURE() << "old spelling loaded without the remap";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_NOT_FOUND) << e.what();
    EXPECT_NE(std::string(e.what()).find("mid_block.attentions.0.to_"), std::string::npos) << e.what();
  }
}

TEST(VaeLoad, MissingKeyAndWrongShapeNameTheKeyAndShapes) {
  const asd::TensorMap weights = asd::safetensors::load(golden("weights.safetensors"));
  const std::string key = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight";  // [32, 64, 1, 1]
  AutoencoderKL vae = fresh_vae();
  asd::TensorMap missing;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights.names()[i] != key) missing.set(weights.names()[i], weights.tensor(i));
  }
  try {
    asd::models::load_vae_weights(*vae, missing);
    ADD_FAILURE() << "a missing key was not detected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_NOT_FOUND);
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[32, 64, 1, 1]"), std::string::npos) << e.what();
  }
  asd::TensorMap wrong = weights;
  wrong.set(key, torch::zeros({32, 64, 3, 3}));
  try {
    asd::models::load_vae_weights(*vae, wrong);
    ADD_FAILURE() << "a wrong shape was not detected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_FORMAT);
    const std::string msg = e.what();
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
    EXPECT_NE(msg.find("[32, 64, 3, 3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[32, 64, 1, 1]"), std::string::npos) << msg;
  }
}

TEST(VaeConfig, UnsupportedValuesNameTheKey) {
  const nlohmann::json base = asd::JsonConfig::load(golden("config.json")).json();
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"act_fn", "gelu"},
      {"down_block_types", nlohmann::json::array({"DownEncoderBlock2D", "AttnDownEncoderBlock2D", "DownEncoderBlock2D"})},
      {"up_block_types", nlohmann::json::array({"UpDecoderBlock2D", "UpDecoderBlock2D", "AttnUpDecoderBlock2D"})},
      {"mid_block_add_attention", false},
      {"use_quant_conv", false},
      {"shift_factor", 0.0609},
  };
  for (const auto& [key, value] : cases) {
    nlohmann::json j = base;
    j[key] = value;
    try {
      asd::models::vae_from_config(asd::JsonConfig(j, "vae-config.json"));
      ADD_FAILURE() << key << " accepted";
    } catch (const asd::Error& e) {
      EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED) << key << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("'" + key + "'"), std::string::npos) << e.what();
    }
  }
  nlohmann::json j = base;
  j["force_upcast"] = false;  // accepted and ignored
  EXPECT_NO_THROW(asd::models::vae_from_config(asd::JsonConfig(j, "ok.json")));
}

TEST(VaeLoad, SaveThenLoadIsBitIdentical) {
  torch::NoGradGuard no_grad;
  AutoencoderKL a = asd::models::load_vae(golden("config.json"), golden("weights.safetensors"));
  asd::test::TempDir dir;
  const std::string path = (dir.path() / "vae.safetensors").string();
  asd::safetensors::save(path, asd::state_dict(*a));
  const asd::TensorMap saved = asd::safetensors::load(path);
  EXPECT_EQ(saved.size(), asd::safetensors::load(golden("weights.safetensors")).size());
  EXPECT_TRUE(saved.contains("decoder.mid_block.attentions.0.to_out.0.weight"));  // saved in the new spelling
  AutoencoderKL b = fresh_vae();
  asd::models::load_vae_weights(*b, saved);
  b->eval();
  const asd::TensorMap io = asd::safetensors::load(golden("io.safetensors"));
  const auto [ma, la] = a->encode(io.at("image"));
  const auto [mb, lb] = b->encode(io.at("image"));
  EXPECT_TRUE(torch::equal(ma, mb));
  EXPECT_TRUE(torch::equal(la, lb));
  EXPECT_TRUE(torch::equal(a->decode(io.at("latents")), b->decode(io.at("latents"))));
}
