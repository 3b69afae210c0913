// CLIPTextModel against the golden vectors (transformers CLIPTextModel on random tiny weights), config
// errors, and a save -> load round trip.
#include <cstring>
#include <iostream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd.h"
#include "core/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "io/state_dict.h"
#include "models/attention.h"
#include "models/clip_text.h"
#include "test_util.h"

using asd::test::max_abs_error;
using asd::test::shared_path;

namespace {

asd::ClipTextModel load_golden_model(const std::string& name) {
  const std::string dir = shared_path("golden/" + name);
  asd::ClipTextModel model(asd::ClipTextConfig::load(dir + "/config.json"));
  asd::load_clip_text(*model, asd::safetensors::load(dir + "/weights.safetensors"));
  model->eval();
  return model;
}

// The golden output of `name` vs ours: max abs error, printed, must be <= 1e-4 (golden/README.md), under every
// attention kernel this libtorch has (models/attention.h): manual, and fused (is_causal) from 2.0.
void check_golden(const std::string& name, const std::string& expected_act) {
  asd::ClipTextModel model = load_golden_model(name);
  EXPECT_EQ(model->config().hidden_act, expected_act);
  const asd::TensorMap io = asd::safetensors::load(shared_path("golden/" + name + "/io.safetensors"));
  torch::NoGradGuard no_grad;
  for (const auto kernel : asd::models::available_attention_kernels()) {
    asd::models::ScopedAttentionKernel use(kernel);
    const torch::Tensor out = model->forward(io.at("input_ids"));
    const torch::Tensor& expected = io.at("last_hidden_state");
    ASSERT_EQ(out.sizes(), expected.sizes());
    const double err = max_abs_error(out, expected);
    std::cout << "  [" << name << ", " << asd::models::to_string(kernel) << " attention] last_hidden_state max abs error = " << err << "\n";
    EXPECT_LE(err, 1e-4) << asd::models::to_string(kernel);
  }
}

}  // namespace

TEST(ClipText, GoldenQuickGelu) { check_golden("clip_text_quickgelu_tiny", "quick_gelu"); }

TEST(ClipText, GoldenGelu) { check_golden("clip_text_gelu_tiny", "gelu"); }

TEST(ClipText, ActivationsDifferSoTheGoldenCasesAreDistinct) {
  // Loading the gelu case's weights into a quick_gelu model must NOT reproduce the gelu golden output:
  // guards against an activation switch that is silently ignored.
  const std::string dir = shared_path("golden/clip_text_gelu_tiny");
  asd::ClipTextConfig config = asd::ClipTextConfig::load(dir + "/config.json");
  config.hidden_act = "quick_gelu";
  asd::ClipTextModel model(config);
  asd::load_clip_text(*model, asd::safetensors::load(dir + "/weights.safetensors"));
  const asd::TensorMap io = asd::safetensors::load(dir + "/io.safetensors");
  torch::NoGradGuard no_grad;
  EXPECT_GT(max_abs_error(model->forward(io.at("input_ids")), io.at("last_hidden_state")), 1e-3);
}

TEST(ClipText, UnsupportedHiddenActNamesTheKey) {
  nlohmann::json j = asd::JsonConfig::load(shared_path("golden/clip_text_gelu_tiny/config.json")).json();
  j["hidden_act"] = "gelu_new";
  try {
    asd::ClipTextConfig::from_json(asd::JsonConfig(j, "text_encoder/config.json"));
    FAIL() << "hidden_act gelu_new was accepted";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED) << e.what();
    const std::string msg = e.what();
    EXPECT_NE(msg.find("hidden_act"), std::string::npos) << msg;
    EXPECT_NE(msg.find("gelu_new"), std::string::npos) << msg;
    std::cout << "  " << msg << "\n";
  }
}

TEST(ClipText, ParameterNamesAreCheckpointNames) {
  asd::ClipTextModel model = load_golden_model("clip_text_quickgelu_tiny");
  const asd::TensorMap file = asd::safetensors::load(shared_path("golden/clip_text_quickgelu_tiny/weights.safetensors"));
  const asd::TensorMap ours = asd::state_dict(*model);
  EXPECT_EQ(ours.size(), file.size());
  for (const std::string& name : file.names()) EXPECT_TRUE(ours.contains(name)) << name;
}

TEST(ClipText, PositionIdsBufferInCheckpointIsIgnored) {
  const std::string dir = shared_path("golden/clip_text_quickgelu_tiny");
  asd::TensorMap weights = asd::safetensors::load(dir + "/weights.safetensors");
  weights.set("text_model.embeddings.position_ids", torch::arange(77, torch::kInt64).unsqueeze(0));
  asd::ClipTextModel model(asd::ClipTextConfig::load(dir + "/config.json"));
  EXPECT_NO_THROW(asd::load_clip_text(*model, weights));
  const asd::TensorMap io = asd::safetensors::load(dir + "/io.safetensors");
  torch::NoGradGuard no_grad;
  EXPECT_LE(max_abs_error(model->forward(io.at("input_ids")), io.at("last_hidden_state")), 1e-4);
}

TEST(ClipText, MissingWeightIsNotFound) {
  const std::string dir = shared_path("golden/clip_text_quickgelu_tiny");
  const asd::TensorMap full = asd::safetensors::load(dir + "/weights.safetensors");
  asd::TensorMap partial;
  for (const std::string& name : full.names()) {
    if (name != "text_model.final_layer_norm.weight") partial.set(name, full.at(name));
  }
  asd::ClipTextModel model(asd::ClipTextConfig::load(dir + "/config.json"));
  try {
    asd::load_clip_text(*model, partial);
    FAIL() << "a missing weight was accepted";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_NOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("text_model.final_layer_norm.weight"), std::string::npos) << e.what();
  }
}

TEST(ClipText, CausalMaskMakesEarlyTokensIndependentOfLaterOnes) {
  // Changing token 10 must leave outputs at positions 0..9 unchanged and change position 10.
  asd::ClipTextModel model = load_golden_model("clip_text_quickgelu_tiny");
  const asd::TensorMap io = asd::safetensors::load(shared_path("golden/clip_text_quickgelu_tiny/io.safetensors"));
  torch::Tensor ids = io.at("input_ids").clone();
  torch::NoGradGuard no_grad;
  const torch::Tensor a = model->forward(ids);
  ids.index_put_({0, 10}, (ids.index({0, 10}).item<int64_t>() + 1) % 1000);
  const torch::Tensor b = model->forward(ids);
  EXPECT_EQ(max_abs_error(a.slice(1, 0, 10), b.slice(1, 0, 10)), 0.0);
  EXPECT_GT(max_abs_error(a.select(1, 10), b.select(1, 10)), 1e-3);
}

TEST(ClipText, SaveLoadRoundTripIsBitIdentical) {
  asd::test::TempDir dir;
  asd::ClipTextModel model = load_golden_model("clip_text_gelu_tiny");
  const std::string path = (dir.path() / "text_encoder.safetensors").string();
  asd::safetensors::save(path, asd::state_dict(*model));

  torch::manual_seed(7);  // the fresh model starts from different random weights
  asd::ClipTextModel fresh(model->config());
  fresh->eval();
  asd::load_state_dict(*fresh, asd::safetensors::load(path), asd::LoadOptions{/*reject_unexpected=*/true, {}});

  const torch::Tensor ids = asd::safetensors::load(shared_path("golden/clip_text_gelu_tiny/io.safetensors")).at("input_ids");
  torch::NoGradGuard no_grad;
  const torch::Tensor a = model->forward(ids).contiguous();
  const torch::Tensor b = fresh->forward(ids).contiguous();
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_EQ(0, std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size())) << "outputs differ after save/load";
}

TEST(ClipText, RejectsBadInputIds) {
  asd::ClipTextConfig config;
  config.vocab_size = 16;
  config.hidden_size = 8;
  config.intermediate_size = 16;
  config.num_attention_heads = 2;
  config.num_hidden_layers = 1;
  asd::ClipTextModel model(config);
  EXPECT_EQ(model->forward(torch::zeros({2, 77}, torch::kInt64)).sizes(), torch::IntArrayRef({2, 77, 8}));
  EXPECT_THROW(model->forward(torch::zeros({2, 78}, torch::kInt64)), asd::Error);  // longer than 77
  EXPECT_THROW(model->forward(torch::zeros({77}, torch::kInt64)), asd::Error);     // no batch dim
  EXPECT_THROW(model->forward(torch::zeros({1, 77}, torch::kInt32)), asd::Error);  // not int64
}
