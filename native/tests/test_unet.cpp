// UNet2DConditionModel: golden outputs of diffusers 0.21 (random tiny SD 1.x / 2.x inpainting UNets), config
// errors, weight-loading errors, and a save -> load round trip.
#include <iostream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/state_dict.h"
#include "models/attention.h"
#include "models/unet_2d_condition.h"
#include "models/unet_flops.h"
#include "test_util.h"

using asd::models::UNet2DConditionModel;

namespace {

std::string golden(const std::string& c, const std::string& file) { return asd::test::shared_path("golden/" + c + "/" + file); }

UNet2DConditionModel load_golden_unet(const std::string& c) {
  return asd::models::load_unet(golden(c, "config.json"), golden(c, "weights.safetensors"));
}

// Under every attention kernel this libtorch has (models/attention.h): manual, and fused from 2.0.
void check_golden(const std::string& c) {
  torch::NoGradGuard no_grad;
  UNet2DConditionModel unet = load_golden_unet(c);
  const asd::TensorMap io = asd::safetensors::load(golden(c, "io.safetensors"));
  for (const auto kernel : asd::models::available_attention_kernels()) {
    asd::models::ScopedAttentionKernel use(kernel);
    const torch::Tensor out = unet->forward(io.at("sample"), io.at("timestep"), io.at("encoder_hidden_states"));
    const double err = asd::test::max_abs_error(out, io.at("out"));
    std::cout << "  [" << c << ", " << asd::models::to_string(kernel) << " attention] max abs error vs diffusers 0.21: " << err << "\n";
    EXPECT_LE(err, 1e-4) << asd::models::to_string(kernel);
  }
  // The reference output is not trivially small: an error bound of 1e-4 means something.
  EXPECT_GT(io.at("out").abs().max().item<double>(), 1e-2);
}

nlohmann::json golden_config(const std::string& c) { return asd::JsonConfig::load(golden(c, "config.json")).json(); }

// Builds a UNet from `j` and returns the error; fails the test if it succeeds.
asd::Error config_error(const nlohmann::json& j) {
  try {
    asd::models::unet_from_config(asd::JsonConfig(j, "test-config.json"));
  } catch (const asd::Error& e) {
    return e;
  }
  ADD_FAILURE() << "config accepted but should be rejected: " << j.dump();
  return asd::Error(ASD_OK, "");
}

}  // namespace

TEST(UnetGolden, Sd1InpaintTinyMatchesDiffusers) { check_golden("unet_sd1_inpaint_tiny"); }

TEST(UnetGolden, Sd2InpaintTinyLinearProjectionPerBlockHeadsMatchesDiffusers) { check_golden("unet_sd2_inpaint_tiny"); }

TEST(UnetConfig, AttentionHeadDimIsTheNumberOfHeads) {
  // SD 1.x: attention_head_dim 4 with 32 channels -> 4 heads of 8, the to_q weight stays [32,32] either way, so
  // only the golden output can tell a wrong reading; here we check the parsed config.
  const auto c1 = asd::models::unet_config_from_json(asd::JsonConfig(golden_config("unet_sd1_inpaint_tiny"), "sd1"));
  EXPECT_EQ(c1.num_attention_heads, (std::vector<int64_t>{4, 4, 4, 4}));
  const auto c2 = asd::models::unet_config_from_json(asd::JsonConfig(golden_config("unet_sd2_inpaint_tiny"), "sd2"));
  EXPECT_EQ(c2.num_attention_heads, (std::vector<int64_t>{2, 2, 4, 4}));
  EXPECT_TRUE(c2.use_linear_projection);
  EXPECT_EQ(c2.cross_attention_dim, (std::vector<int64_t>{48, 48, 48, 48}));
  EXPECT_EQ(c2.in_channels, 9);
}

TEST(UnetConfig, UnsupportedValuesNameTheKey) {
  const nlohmann::json base = golden_config("unet_sd1_inpaint_tiny");
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"resnet_time_scale_shift", "scale_shift"},
      {"class_embed_type", "timestep"},
      {"addition_embed_type", "text"},
      {"time_cond_proj_dim", 256},
      {"encoder_hid_dim", 64},
      {"dual_cross_attention", true},
      {"only_cross_attention", true},
      {"time_embedding_type", "fourier"},
      {"conv_in_kernel", 1},
      {"num_attention_heads", 4},
      {"act_fn", "gelu"},
      {"mid_block_type", "UNetMidBlock2DSimpleCrossAttn"},
      {"down_block_types", nlohmann::json::array({"CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"})},
      {"up_block_types", nlohmann::json::array({"UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"})},
  };
  for (const auto& [key, value] : cases) {
    nlohmann::json j = base;
    j[key] = value;
    const asd::Error e = config_error(j);
    EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED) << key << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find("'" + key + "'"), std::string::npos) << "message does not name " << key << ": " << e.what();
  }
  // A known key at its default value, and an unknown key, are fine.
  nlohmann::json j = base;
  j["resnet_time_scale_shift"] = "default";
  j["some_future_key"] = 3;
  EXPECT_NO_THROW(asd::models::unet_from_config(asd::JsonConfig(j, "ok.json")));
}

TEST(UnetLoad, MissingKeyAndWrongShapeNameTheKeyAndShapes) {
  const std::string c = "unet_sd1_inpaint_tiny";
  UNet2DConditionModel unet = asd::models::unet_from_config(asd::JsonConfig::load(golden(c, "config.json")));
  const asd::TensorMap weights = asd::safetensors::load(golden(c, "weights.safetensors"));
  const std::string key = "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";  // [64, 32]

  asd::TensorMap missing;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights.names()[i] != key) missing.set(weights.names()[i], weights.tensor(i));
  }
  try {
    asd::load_state_dict(*unet, missing);
    ADD_FAILURE() << "a missing key was not detected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_NOT_FOUND);
    const std::string msg = e.what();
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
    EXPECT_NE(msg.find("[64, 32]"), std::string::npos) << msg;
  }

  asd::TensorMap wrong = weights;
  wrong.set(key, torch::zeros({64, 48}));
  try {
    asd::load_state_dict(*unet, wrong);
    ADD_FAILURE() << "a wrong shape was not detected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_FORMAT);
    const std::string msg = e.what();
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
    EXPECT_NE(msg.find("[64, 48]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[64, 32]"), std::string::npos) << msg;
  }
}

TEST(UnetLoad, SaveThenLoadIsBitIdentical) {
  torch::NoGradGuard no_grad;
  const std::string c = "unet_sd2_inpaint_tiny";
  UNet2DConditionModel a = load_golden_unet(c);
  asd::test::TempDir dir;
  const std::string path = (dir.path() / "unet.safetensors").string();
  asd::safetensors::save(path, asd::state_dict(*a));
  UNet2DConditionModel b = asd::models::unet_from_config(asd::JsonConfig::load(golden(c, "config.json")));
  asd::LoadOptions strict;
  strict.reject_unexpected = true;
  asd::load_state_dict(*b, asd::safetensors::load(path), strict);
  b->eval();
  const asd::TensorMap io = asd::safetensors::load(golden(c, "io.safetensors"));
  const torch::Tensor ya = a->forward(io.at("sample"), io.at("timestep"), io.at("encoder_hidden_states"));
  const torch::Tensor yb = b->forward(io.at("sample"), io.at("timestep"), io.at("encoder_hidden_states"));
  EXPECT_TRUE(torch::equal(ya, yb));
  // The saved file holds exactly the diffusers keys of the checkpoint it came from.
  const asd::TensorMap original = asd::safetensors::load(golden(c, "weights.safetensors"));
  EXPECT_EQ(asd::safetensors::load(path).size(), original.size());
}

TEST(UnetForward, TimestepBroadcastAndTypes) {
  torch::NoGradGuard no_grad;
  const std::string c = "unet_sd1_inpaint_tiny";
  UNet2DConditionModel unet = load_golden_unet(c);
  const asd::TensorMap io = asd::safetensors::load(golden(c, "io.safetensors"));
  const torch::Tensor& sample = io.at("sample");
  const torch::Tensor& ctx = io.at("encoder_hidden_states");
  const int64_t t0 = io.at("timestep")[0].item<int64_t>();
  const torch::Tensor per_batch = unet->forward(sample, torch::full({2}, t0, torch::kInt64), ctx);
  // A 0-d and a [1] timestep are broadcast to the batch; a float timestep embeds like the integer one.
  EXPECT_TRUE(torch::equal(unet->forward(sample, torch::tensor(t0), ctx), per_batch));
  EXPECT_TRUE(torch::equal(unet->forward(sample, torch::full({1}, t0, torch::kInt64), ctx), per_batch));
  EXPECT_TRUE(torch::equal(unet->forward(sample, torch::full({2}, static_cast<double>(t0), torch::kFloat32), ctx), per_batch));
  // The first batch element with the golden timestep matches the golden output.
  EXPECT_LE(asd::test::max_abs_error(per_batch[0], io.at("out")[0]), 1e-4);
  // Three timesteps for a batch of two is an error.
  EXPECT_THROW(unet->forward(sample, torch::zeros({3}, torch::kInt64), ctx), asd::Error);
}

TEST(UnetForward, SharedContextEqualsExpandedContext) {
  // The batched inpainting loop passes one prompt embedding [1,L,D] for all masks: cross-attention then
  // projects keys/values once and folds the batch into the query rows. Same result as the expanded context.
  torch::NoGradGuard no_grad;
  const std::string c = "unet_sd2_inpaint_tiny";  // linear projections, per-block head counts
  UNet2DConditionModel unet = load_golden_unet(c);
  const asd::TensorMap io = asd::safetensors::load(golden(c, "io.safetensors"));
  const torch::Tensor ctx1 = io.at("encoder_hidden_states").narrow(0, 0, 1);
  const torch::Tensor sample = torch::randn({5, io.at("sample").size(1), io.at("sample").size(2), io.at("sample").size(3)});
  const torch::Tensor t = torch::tensor(int64_t{321});
  const torch::Tensor shared = unet->forward(sample, t, ctx1);
  const torch::Tensor expanded = unet->forward(sample, t, ctx1.expand({5, -1, -1}).contiguous());
  const double err = asd::test::max_abs_error(shared, expanded);
  std::cout << "shared vs expanded context: max abs error " << err << " (max |out| " << expanded.abs().max().item<float>() << ")\n";
  EXPECT_LE(err, 1e-5);
  // A context batch that is neither 1 nor the sample's is an error.
  EXPECT_THROW(unet->forward(sample, t, io.at("encoder_hidden_states").narrow(0, 0, 1).expand({3, -1, -1})), asd::Error);
}

TEST(UnetForward, SizeNotAMultipleOfEightUpsamplesToSkipSizes) {
  torch::NoGradGuard no_grad;
  const std::string c = "unet_sd1_inpaint_tiny";
  UNet2DConditionModel unet = load_golden_unet(c);
  // 18 -> 9 -> 5 -> 3 on the way down; the up path must come back 3 -> 5 -> 9 -> 18 (not 6 -> 12 -> 24).
  const torch::Tensor y = unet->forward(torch::randn({1, 9, 18, 18}), torch::tensor(int64_t{500}), torch::randn({1, 7, 32}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 4, 18, 18}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
}

TEST(UnetForward, GradientsReachEveryLevelForFinetuning) {
  // Eq. 8 fine-tunes the UNet: the forward pass must be differentiable (no in-place op breaks autograd).
  const std::string c = "unet_sd1_inpaint_tiny";
  UNet2DConditionModel unet = load_golden_unet(c);
  unet->train();
  const asd::TensorMap io = asd::safetensors::load(golden(c, "io.safetensors"));
  const torch::Tensor y = unet->forward(io.at("sample"), io.at("timestep"), io.at("encoder_hidden_states"));
  (y - io.at("out") - 0.1).pow(2).mean().backward();
  int checked = 0;
  for (const auto& p : unet->named_parameters()) {
    if (p.key() == "conv_in.weight" || p.key() == "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight" ||
        p.key() == "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight" || p.key() == "time_embedding.linear_1.weight") {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4);
}

TEST(UNetFlops, HandCountOfATwoLevelUNet) {
  // conv_in, 2 down levels (the second with cross-attention), no mid block, 2 up levels, conv_out; latents 8 x 8, 5 prompt
  // tokens. Each term written out by hand (2 FLOPs per multiply-add):
  //   time MLP 2·32·128 + 2·128·128 = 40,960; conv_in 2·9·9·32·64 = 331,776
  //   down 0 (8x8): resnet 32->32 2,367,488; downsample 32->32 at 4x4 294,912
  //   down 1 (4x4): resnet 32->64 (with 1x1 shortcut) 1,851,392; transformer(64, 16 tokens) 2,727,936
  //   up 0 (4x4): resnet 128->64 3,817,472 + transformer 2,727,936; resnet 96->64 3,162,112 + transformer 2,727,936;
  //               upsample conv at 8x8 4,718,592
  //   up 1 (8x8): resnet 96->32 5,120,000; resnet 64->32 3,809,280; conv_out 2·9·32·4·64 = 147,456
  asd::models::UNet2DConditionConfig c;
  c.in_channels = 9;
  c.out_channels = 4;
  c.block_out_channels = {32, 64};
  c.layers_per_block = {1, 1};
  c.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D"};
  c.up_block_types = {"CrossAttnUpBlock2D", "UpBlock2D"};
  c.mid_block_type = "";
  c.num_attention_heads = {2, 2};
  c.cross_attention_dim = {16, 16};
  c.transformer_layers_per_block = {1, 1};
  c.norm_num_groups = 8;
  EXPECT_EQ(asd::models::unet_forward_flops(c, 8, 8, 5), 33845248);
  // The architecture really is this one (the count follows the same channel bookkeeping as the model).
  UNet2DConditionModel unet(c);
  EXPECT_EQ(unet->forward(torch::randn({1, 9, 8, 8}), torch::tensor({10}), torch::randn({1, 5, 16})).sizes(), torch::IntArrayRef({1, 4, 8, 8}));
}
