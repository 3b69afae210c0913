// Backbones (ResNet18 / AlexNet), the LPIPS distance map (eq. 16-17) and the prototype bank (eq. 12-14).
#include <chrono>
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/state_dict.h"
#include "models/backbones.h"
#include "models/lpips.h"
#include "pipeline/prototype_bank.h"
#include "test_util.h"

using asd::test::max_abs_error;
using asd::test::shared_path;
using asd::test::TempDir;

namespace {

asd::ResNet18 random_resnet(asd::ResNetPadding padding, uint64_t seed = 7) {
  asd::ResNet18 net(padding, asd::ImagePreprocess::onnx_resnet18());
  net->init_random(seed);
  net->eval();
  return net;
}

torch::Tensor param(torch::nn::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters(true)) {
    if (p.key() == name) return p.value();
  }
  for (const auto& b : m.named_buffers(true)) {
    if (b.key() == name) return b.value();
  }
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

// Brute force eq. 14 in float64: min_j sum_c (q_ic - b_jc)^2.
torch::Tensor brute_min_sq(const torch::Tensor& q, const torch::Tensor& b) {
  const torch::Tensor qd = q.to(torch::kFloat64), bd = b.to(torch::kFloat64);
  return std::get<0>((qd.unsqueeze(1) - bd.unsqueeze(0)).pow(2).sum(2).min(1));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Backbones
// ---------------------------------------------------------------------------------------------------------

TEST(Backbone, ResNet18TorchvisionParameterNames) {
  asd::ResNet18 net;
  const asd::TensorMap sd = asd::state_dict(*net);
  // torchvision resnet18 without fc: 60 parameters (conv1, bn1 x2, 8 blocks x 6, 3 downsamples x 3) and
  // 40 BN buffers (20 BNs x running_mean/var; no num_batches_tracked).
  size_t params = net->parameters().size();
  EXPECT_EQ(params, 60u);
  EXPECT_EQ(sd.size(), 60u + 40u);
  for (const char* key : {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.bias", "layer2.0.downsample.0.weight",
                          "layer2.0.downsample.1.running_mean", "layer4.1.conv2.weight"}) {
    EXPECT_TRUE(sd.contains(key)) << key;
  }
  EXPECT_FALSE(sd.contains("layer1.0.downsample.0.weight"));  // layer1 keeps 64 channels at stride 1
  EXPECT_EQ(sd.at("layer3.0.downsample.0.weight").sizes(), torch::IntArrayRef({256, 128, 1, 1}));
}

TEST(Backbone, ResNet18OnnxExportSizesAt224) {
  torch::NoGradGuard no_grad;
  asd::ResNet18 net = random_resnet(asd::ResNetPadding::onnx_export);
  const asd::ResNetFeatures f = net->forward(torch::randn({1, 3, 224, 224}));
  // 224 -> conv1 (7x7 s2, pads 3/2) 112 -> max pool (3x3 s2, pads 1/0) 56 -> 28 -> 14 -> 7.
  EXPECT_EQ(f.stem.sizes(), torch::IntArrayRef({1, 64, 112, 112}));
  EXPECT_EQ(f.layer1.sizes(), torch::IntArrayRef({1, 64, 56, 56}));
  EXPECT_EQ(f.layer2.sizes(), torch::IntArrayRef({1, 128, 28, 28}));
  EXPECT_EQ(f.layer3.sizes(), torch::IntArrayRef({1, 256, 14, 14}));
  EXPECT_EQ(f.layer4.sizes(), torch::IntArrayRef({1, 512, 7, 7}));
}

// conv1 with a single all-ones 7x7 kernel on an all-ones 9x9 image counts the in-image pixels of each window.
// onnx_export pads top/left 3, bottom/right 2: out = floor((9 + 5 - 7) / 2) + 1 = 4 per side, output row i
// covers input rows 2i-3 .. 2i+3, clipped to 0..8: 4, 6, 7, 6 pixels. torchvision (pads 3/3) gives 5 per
// side with counts 4, 6, 7, 6, 4.
TEST(Backbone, ResNet18AsymmetricPaddingHandComputed) {
  torch::NoGradGuard no_grad;
  for (const auto padding : {asd::ResNetPadding::onnx_export, asd::ResNetPadding::torchvision}) {
    asd::ResNet18 net(padding);
    for (auto& p : net->parameters()) p.zero_();
    param(*net, "conv1.weight")[0][0].fill_(1.0);
    param(*net, "bn1.weight").fill_(1.0);
    param(*net, "bn1.running_var").fill_(1.0);
    const torch::Tensor stem = net->forward(torch::ones({1, 3, 9, 9}), /*last_stage=*/1).stem[0][0];
    const std::vector<double> counts =
        padding == asd::ResNetPadding::onnx_export ? std::vector<double>{4, 6, 7, 6} : std::vector<double>{4, 6, 7, 6, 4};
    const torch::Tensor c = torch::tensor(counts, torch::kFloat64);
    const torch::Tensor expected = torch::outer(c, c) / std::sqrt(1.0 + 1e-5);  // BN: x / sqrt(var + eps)
    const double err = max_abs_error(stem, expected);
    std::cout << "  [" << asd::to_string(padding) << "] stem " << stem.sizes() << " max abs error vs hand count " << err << "\n";
    EXPECT_LE(err, 1e-4);
  }
}

// At even sizes the last bottom/right pad row is never read by a stride-2 window (n + 2*lo - k is odd), so
// both padding modes must agree exactly up to float rounding at 224x224.
TEST(Backbone, ResNet18PaddingModesAgreeAtEvenSizes) {
  torch::NoGradGuard no_grad;
  asd::ResNet18 a = random_resnet(asd::ResNetPadding::onnx_export, 3);
  asd::ResNet18 b(asd::ResNetPadding::torchvision);
  asd::load_state_dict(*b, asd::state_dict(*a));
  b->eval();
  const torch::Tensor x = torch::randn({1, 3, 224, 224});
  const asd::ResNetFeatures fa = a->forward(x), fb = b->forward(x);
  const double scale = fb.layer4.abs().max().item<double>();
  const double err = max_abs_error(fa.layer4, fb.layer4);
  std::cout << "  layer4 max abs difference onnx_export vs torchvision at 224: " << err << " (max |layer4| " << scale << ")\n";
  EXPECT_LE(err, 1e-4 * std::max(1.0, scale));
  // onnx_export rejects sizes where its two stride-2 paths would disagree.
  try {
    a->forward(torch::randn({1, 3, 100, 100}));
    ADD_FAILURE() << "100x100 should be rejected in onnx_export mode";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_INVALID_ARGUMENT);
  }
}

TEST(Backbone, PreprocessAppliesOrderScaleMeanStdAndRoundTripsMetadata) {
  const asd::ImagePreprocess p = asd::ImagePreprocess::onnx_resnet18();
  // pixel RGB = (0.1, 0.5, 1.0): BGR*255 = (255, 127.5, 25.5) minus (103.06, 115.90, 123.15).
  const torch::Tensor x = torch::tensor({0.1f, 0.5f, 1.0f}).view({1, 3, 1, 1});
  const torch::Tensor y = p.apply(x).flatten();
  const torch::Tensor expected = torch::tensor({255.0 - 103.06, 127.5 - 115.90, 25.5 - 123.15}, torch::kFloat64);
  EXPECT_LE(max_abs_error(y, expected), 1e-4);
  const asd::ImagePreprocess t = asd::ImagePreprocess::imagenet_torchvision();
  const torch::Tensor yt = t.apply(x).flatten();
  EXPECT_LE(max_abs_error(yt, torch::tensor({(0.1 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (1.0 - 0.406) / 0.225}, torch::kFloat64)), 1e-5);

  const asd::ImagePreprocess back = asd::ImagePreprocess::from_metadata(p.to_metadata(), t);
  EXPECT_EQ(back.channel_order, asd::ChannelOrder::bgr);
  EXPECT_EQ(back.scale, p.scale);
  EXPECT_EQ(back.mean, p.mean);
  EXPECT_EQ(back.std_dev, p.std_dev);
  EXPECT_EQ(asd::ImagePreprocess::from_metadata({{"format", "pt"}}, t).channel_order, asd::ChannelOrder::rgb);  // fallback
  auto bad = p.to_metadata();
  bad["preprocess.mean"] = "1,2";
  try {
    asd::ImagePreprocess::from_metadata(bad, t, "file.safetensors");
    ADD_FAILURE() << "a 2-entry mean should be rejected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_FORMAT);
    EXPECT_NE(std::string(e.what()).find("preprocess.mean"), std::string::npos) << e.what();
  }
}

TEST(Backbone, LoadResNet18ReadsPaddingAndPreprocessFromMetadata) {
  TempDir dir;
  torch::NoGradGuard no_grad;
  asd::ResNet18 net = random_resnet(asd::ResNetPadding::onnx_export, 11);
  const std::string path = (dir.path() / "resnet18.safetensors").string();
  asd::TensorMap sd = asd::state_dict(*net);
  sd.set("fc.weight", torch::randn({1000, 512}));  // torchvision's classifier: ignored
  sd.set("bn1.num_batches_tracked", torch::tensor(int64_t{0}));  // torchvision BN bookkeeping: ignored
  asd::safetensors::save(path, sd, asd::resnet18_metadata(*net));
  asd::ResNet18 back = asd::load_resnet18(path);  // defaults say torchvision/imagenet; the file overrides
  EXPECT_EQ(back->padding(), asd::ResNetPadding::onnx_export);
  EXPECT_EQ(back->preprocess().channel_order, asd::ChannelOrder::bgr);
  const torch::Tensor x = torch::rand({1, 3, 64, 64});
  EXPECT_TRUE(torch::equal(net->features_from_rgb01(x).layer4, back->features_from_rgb01(x).layer4));
}

TEST(Backbone, AlexNetTorchvisionNamesAndReluOutputs) {
  torch::NoGradGuard no_grad;
  asd::AlexNetFeatures net;
  net->init_random(5);
  const asd::TensorMap sd = asd::state_dict(*net);
  EXPECT_EQ(sd.size(), 10u);
  for (const char* key : {"features.0.weight", "features.3.bias", "features.6.weight", "features.8.weight", "features.10.bias"}) {
    EXPECT_TRUE(sd.contains(key)) << key;
  }
  const auto f = net->forward(torch::randn({2, 3, 64, 64}));
  ASSERT_EQ(f.size(), 5u);
  // 64 -> conv1 (11, s4, p2) 15 -> pool 7 -> conv2 7 -> pool 3 -> 3 -> 3 -> 3.
  const int64_t sizes[5][2] = {{64, 15}, {192, 7}, {384, 3}, {256, 3}, {256, 3}};
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(f[l].sizes(), torch::IntArrayRef({2, sizes[l][0], sizes[l][1], sizes[l][1]})) << "layer " << l;
    EXPECT_GE(f[l].min().item<float>(), 0.0f) << "layer " << l << " is not a ReLU output";
  }
}

// ---------------------------------------------------------------------------------------------------------
// LPIPS
// ---------------------------------------------------------------------------------------------------------

TEST(Lpips, AlexGoldenWithin1e4) {
  const asd::TensorMap weights = asd::safetensors::load(shared_path("golden/lpips_alex_v01/weights.safetensors"));
  const asd::TensorMap io = asd::safetensors::load(shared_path("golden/lpips_alex_v01/io.safetensors"));
  // The golden's lin weights are the real v0.1 ones shipped in ../weights/lpips.
  const asd::TensorMap real = asd::safetensors::load(shared_path("weights/lpips/alex_v0.1.safetensors"));
  for (int l = 0; l < 5; ++l) {
    const std::string key = "lin" + std::to_string(l) + ".model.1.weight";
    EXPECT_TRUE(torch::equal(weights.at(key), real.at(key))) << key;
  }
  const asd::Lpips lpips = asd::Lpips::alex(weights, weights);
  EXPECT_EQ(lpips.kind(), asd::PerceptualDistance::lpips_alex);
  torch::NoGradGuard no_grad;
  const torch::Tensor d = lpips.distance_map(io.at("in0"), io.at("in1"));
  const torch::Tensor& expected = io.at("distance_map");
  ASSERT_EQ(d.sizes(), expected.sizes());
  const double err = max_abs_error(d, expected);
  std::cout << "  LPIPS alex v0.1 golden: max abs error " << err << " (max expected " << expected.max().item<float>() << ")\n";
  EXPECT_LE(err, 1e-4);
}

TEST(Lpips, RejectsMismatchedShapesAndMissingLinWeights) {
  const asd::TensorMap weights = asd::safetensors::load(shared_path("golden/lpips_alex_v01/weights.safetensors"));
  asd::TensorMap net_only;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights.names()[i].rfind("features.", 0) == 0) net_only.set(weights.names()[i], weights.tensor(i));
  }
  try {
    asd::Lpips::alex(net_only, net_only);
    ADD_FAILURE() << "missing lin weights should be rejected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_NOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("lin0.model.1.weight"), std::string::npos) << e.what();
  }
  const asd::Lpips lpips = asd::Lpips::alex(weights, weights);
  try {
    lpips.distance_map(torch::zeros({1, 3, 64, 64}), torch::zeros({1, 3, 64, 32}));
    ADD_FAILURE() << "mismatched shapes should be rejected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_INVALID_ARGUMENT);
  }
}

TEST(Lpips, ResNetUniformIsZeroOnIdenticalPositiveOtherwiseAndSymmetric) {
  torch::NoGradGuard no_grad;
  const asd::Lpips d = asd::Lpips::resnet18_uniform(random_resnet(asd::ResNetPadding::onnx_export, 21));
  EXPECT_EQ(d.kind(), asd::PerceptualDistance::resnet18_uniform);
  ASSERT_EQ(d.layer_weights().size(), 3u);
  EXPECT_FLOAT_EQ(d.layer_weights()[1].sum().item<float>(), 1.0f);  // 128 x 1/128
  torch::manual_seed(3);
  const torch::Tensor x = torch::rand({2, 3, 64, 64}) * 2 - 1;
  const torch::Tensor y = torch::rand({2, 3, 64, 64}) * 2 - 1;
  const torch::Tensor dxx = d.distance_map(x, x);
  const torch::Tensor dxy = d.distance_map(x, y);
  const torch::Tensor dyx = d.distance_map(y, x);
  ASSERT_EQ(dxx.sizes(), torch::IntArrayRef({2, 1, 64, 64}));
  std::cout << "  D(x,x) max " << dxx.abs().max().item<float>() << ", D(x,y) min " << dxy.min().item<float>() << " max "
            << dxy.max().item<float>() << ", |D(x,y)-D(y,x)| max " << max_abs_error(dxy, dyx) << "\n";
  EXPECT_EQ(dxx.abs().max().item<float>(), 0.0f);
  EXPECT_GT(dxy.min().item<float>(), 0.0f);
  EXPECT_LE(max_abs_error(dxy, dyx), 1e-6);
  // Upper bound: sum over layers of 4/C_l (unit vectors differ by at most 2).
  EXPECT_LE(dxy.max().item<float>(), 4.0f / 64 + 4.0f / 128 + 4.0f / 256);
}

// ---------------------------------------------------------------------------------------------------------
// Prototype bank
// ---------------------------------------------------------------------------------------------------------

TEST(Prototype, MinSquaredDistanceMatchesBruteForceForAnyChunk) {
  torch::manual_seed(42);
  const torch::Tensor q = torch::randn({63, 24});
  const torch::Tensor b = torch::randn({50, 24});
  const torch::Tensor expected = brute_min_sq(q, b);
  for (int64_t chunk : {1, 7, 10, 62, 63, 64, 1000}) {
    const torch::Tensor e = asd::min_squared_distance(q, b, chunk);
    const double err = max_abs_error(e, expected);
    EXPECT_LE(err, 1e-4) << "chunk " << chunk;
  }
  // A query equal to a bank row has distance 0 (clamped, never negative).
  const torch::Tensor self = asd::min_squared_distance(b.narrow(0, 0, 5), b, 3);
  EXPECT_GE(self.min().item<float>(), 0.0f);
  EXPECT_LE(self.max().item<float>(), 1e-4);
}

TEST(Prototype, ChunkRowsKeepTheDistanceBlockUnderTheBound) {
  // 4 shots x 4 rotations of 512x512 at stride 8: 16 * 64 * 64 = 65536 rows; 256 MiB / (65536 * 4 B) = 1024.
  EXPECT_EQ(asd::chunk_rows_for(65536), 1024);
  EXPECT_EQ(asd::chunk_rows_for(65535), 1024);
  EXPECT_EQ(asd::chunk_rows_for(65537), 1023);
  for (int64_t n : {1, 1000, 65537, 1 << 24}) EXPECT_LE(asd::chunk_rows_for(n) * n * 4, asd::kDefaultMaxChunkBytes) << n;
  EXPECT_EQ(asd::chunk_rows_for(int64_t{1} << 27), 1);  // 512 MiB per row: one row, the bound cannot hold
}

TEST(Prototype, ErrorMapMatchesBruteForceWithUnevenChunks) {
  torch::manual_seed(8);
  asd::PrototypeBankOptions options;
  options.max_chunk_bytes = 7 * 40 * 4;  // 7 rows per chunk against 40 bank rows; 2*5*6 = 60 rows: 7 does not divide
  asd::PrototypeBank bank("test", {6, 10}, options);
  const torch::Tensor normal = torch::randn({2, 16, 4, 5});  // 40 bank rows
  bank.add_features("screw", normal);
  ASSERT_EQ(bank.prototypes("screw").sizes(), torch::IntArrayRef({40, 16}));
  const torch::Tensor test = torch::randn({2, 16, 5, 6});
  const torch::Tensor e = bank.error_map("screw", test);
  ASSERT_EQ(e.sizes(), torch::IntArrayRef({2, 5, 6}));
  // Explicit double loop over positions and prototypes.
  const torch::Tensor t64 = test.to(torch::kFloat64), p64 = bank.prototypes("screw").to(torch::kFloat64);
  double worst = 0;
  for (int64_t bi = 0; bi < 2; ++bi) {
    for (int64_t h = 0; h < 5; ++h) {
      for (int64_t w = 0; w < 6; ++w) {
        double best = INFINITY;
        for (int64_t j = 0; j < p64.size(0); ++j) best = std::min(best, (t64[bi].select(1, h).select(1, w) - p64[j]).pow(2).sum().item<double>());
        worst = std::max(worst, std::abs(best - e[bi][h][w].item<double>()));
      }
    }
  }
  std::cout << "  error map vs double loop: max abs error " << worst << "\n";
  EXPECT_LE(worst, 1e-4);
  // The unbatched form searches the same rows in other chunk shapes, so BLAS may pick other kernels (it does on AMD EPYC):
  // equal within the float32 bound of min_squared_distance, eps x (||q - m||^2 + ||b - m||^2) ~ 1.2e-7 x 2 x 32 for these
  // 16-channel N(0, 1) features, not bit for bit.
  const double unbatched = asd::test::max_abs_error(bank.error_map("screw", test[1]), e[1]);
  std::cout << "  batched vs unbatched error map: max abs difference " << unbatched << "\n";
  EXPECT_LE(unbatched, 1e-4);
  try {
    bank.error_map("nut", test);
    ADD_FAILURE() << "unknown category should be rejected";
  } catch (const asd::Error& err) {
    EXPECT_EQ(err.status(), ASD_ERR_NOT_FOUND);
  }
}

TEST(Prototype, RotationsMultiplyBankSizeAndShotsScoreZero) {
  torch::NoGradGuard no_grad;
  asd::ResNet18 net = random_resnet(asd::ResNetPadding::onnx_export, 13);
  const asd::PrototypeExtractor extract = [&](const torch::Tensor& x) { return asd::prototype_features(*net, x); };
  torch::manual_seed(4);
  const torch::Tensor shots = torch::rand({2, 3, 64, 96});
  const torch::Tensor psi = extract(shots);
  ASSERT_EQ(psi.sizes(), torch::IntArrayRef({2, 384, 8, 12}));  // eq. 12: 128 + 256 channels at stride 8

  asd::PrototypeBank one("resnet18", {128, 256}, asd::PrototypeBankOptions{{0}});
  one.add_images("bottle", shots, extract);
  asd::PrototypeBank four("resnet18", {128, 256});  // default {0, 90, 180, 270}
  four.add_images("bottle", shots, extract);
  EXPECT_EQ(one.prototypes("bottle").size(0), 2 * 8 * 12);
  EXPECT_EQ(four.prototypes("bottle").size(0), 4 * one.prototypes("bottle").size(0));
  four.add_images("bottle", shots.narrow(0, 0, 1), extract);  // adding later appends
  EXPECT_EQ(four.prototypes("bottle").size(0), 4 * 3 * 8 * 12);

  // A shot's own features are in the bank: E = 0 up to float32 cancellation; another image scores > 0.
  const torch::Tensor e_shot = four.error_map("bottle", psi[0]);
  const torch::Tensor e_other = four.error_map("bottle", extract(torch::rand({1, 3, 64, 96}))[0]);
  std::cout << "  shot E max " << e_shot.max().item<float>() << ", other image E mean " << e_other.mean().item<float>() << "\n";
  EXPECT_LE(e_shot.max().item<float>(), 1e-4 * e_other.mean().item<float>());
  EXPECT_GT(e_other.min().item<float>(), 0.0f);

  asd::PrototypeBankOptions bad;
  bad.rotations_deg = {45};
  EXPECT_THROW(asd::PrototypeBank("resnet18", {128, 256}, bad), asd::Error);
}

TEST(Prototype, SavedAndLoadedBankGivesIdenticalMaps) {
  TempDir dir;
  torch::manual_seed(9);
  asd::PrototypeBank bank("resnet18-onnx_export", {128, 256}, asd::PrototypeBankOptions{{0, 180}});
  bank.add_features("bottle", torch::randn({2, 384, 4, 4}));
  bank.add_features("cable", torch::randn({1, 384, 3, 5}));
  const std::string path = (dir.path() / "bank.safetensors").string();
  bank.save(path);
  const asd::PrototypeBank back = asd::PrototypeBank::load(path);
  EXPECT_EQ(back.backbone(), "resnet18-onnx_export");
  EXPECT_EQ(back.feature_dims(), std::vector<int64_t>({128, 256}));
  EXPECT_EQ(back.options().rotations_deg, std::vector<int64_t>({0, 180}));
  EXPECT_EQ(back.categories(), std::vector<std::string>({"bottle", "cable"}));
  const torch::Tensor test = torch::randn({2, 384, 6, 7});
  for (const char* c : {"bottle", "cable"}) {
    EXPECT_TRUE(torch::equal(back.prototypes(c), bank.prototypes(c))) << c;
    EXPECT_TRUE(torch::equal(back.error_map(c, test), bank.error_map(c, test))) << c;
  }
  // A safetensors file that is not a bank is rejected with a format error.
  const std::string other = (dir.path() / "other.safetensors").string();
  asd::TensorMap m;
  m.set("x", torch::zeros({2, 2}));
  asd::safetensors::save(other, m);
  try {
    asd::PrototypeBank::load(other);
    ADD_FAILURE() << "a file without bank metadata should be rejected";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_FORMAT);
  }
}

// Timing only (run with --gtest_also_run_disabled_tests): one 512x512 error map against a 4-shot x
// 4-rotation bank (65536 x 384 prototypes), random ResNet18 weights.
TEST(Prototype, DISABLED_Timing512ErrorMapFourShotsFourRotations) {
  torch::NoGradGuard no_grad;
  asd::ResNet18 net = random_resnet(asd::ResNetPadding::onnx_export, 1);
  const asd::PrototypeExtractor extract = [&](const torch::Tensor& x) { return asd::prototype_features(*net, x); };
  asd::PrototypeBank bank("resnet18", {128, 256});
  const auto t0 = std::chrono::steady_clock::now();
  bank.add_images("bottle", torch::rand({4, 3, 512, 512}), extract);
  const auto t1 = std::chrono::steady_clock::now();
  const torch::Tensor psi = extract(torch::rand({1, 3, 512, 512}));
  const auto t2 = std::chrono::steady_clock::now();
  const torch::Tensor e = bank.error_map("bottle", psi[0]);
  const auto t3 = std::chrono::steady_clock::now();
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  std::cout << "  threads " << torch::get_num_threads() << ", bank " << bank.prototypes("bottle").sizes() << ": build " << ms(t0, t1)
            << " ms, test features " << ms(t1, t2) << " ms, error map " << ms(t2, t3) << " ms\n";
  EXPECT_EQ(bank.prototypes("bottle").size(0), 16 * 64 * 64);
  EXPECT_EQ(e.sizes(), torch::IntArrayRef({64, 64}));
}
