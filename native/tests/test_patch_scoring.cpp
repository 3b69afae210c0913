// Scoring options beyond the paper's error map (issue 25): bank views (rotations and flips), position-aware matching, and
// mutual (transductive, MuSc-style) scoring. Each against a brute-force computation in float64.
#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/backbones.h"
#include "pipeline/mutual_scoring.h"
#include "pipeline/prototype_bank.h"
#include "test_util.h"

using asd::test::max_abs_error;
using asd::test::TempDir;

namespace {

asd::ResNet18 random_resnet(uint64_t seed) {
  asd::ResNet18 net(asd::ResNetPadding::onnx_export, asd::ImagePreprocess::onnx_resnet18());
  net->init_random(seed);
  net->eval();
  return net;
}

double sq_dist(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).pow(2).sum().item<double>(); }

// Position-aware matching by definition: min over maps m and cells within Chebyshev distance r (inside the grid).
torch::Tensor brute_local(const torch::Tensor& q, const torch::Tensor& bank, int64_t r) {
  const torch::Tensor qd = q.to(torch::kFloat64), bd = bank.to(torch::kFloat64);
  const int64_t b = q.size(0), h = q.size(2), w = q.size(3);
  torch::Tensor out = torch::empty({b, h, w}, torch::kFloat64);
  for (int64_t i = 0; i < b; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        double best = INFINITY;
        for (int64_t m = 0; m < bank.size(0); ++m)
          for (int64_t yy = std::max<int64_t>(0, y - r); yy <= std::min(h - 1, y + r); ++yy)
            for (int64_t xx = std::max<int64_t>(0, x - r); xx <= std::min(w - 1, x + r); ++xx)
              best = std::min(best, sq_dist(qd[i].select(1, y).select(1, x), bd[m].select(1, yy).select(1, xx)));
        out[i][y][x] = best;
      }
  return out;
}

// Mutual scoring by definition: d_j(p) = min_q ||f_i(p) - f_j(q)||^2 per reference j, then the mean of the k smallest.
torch::Tensor brute_mutual(const torch::Tensor& f, const std::vector<std::vector<int64_t>>& refs, int64_t k) {
  const torch::Tensor fd = f.to(torch::kFloat64);
  const int64_t n = f.size(0), h = f.size(2), w = f.size(3);
  torch::Tensor out = torch::empty({n, h, w}, torch::kFloat64);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        std::vector<double> d;
        for (int64_t j : refs[static_cast<size_t>(i)]) {
          double best = INFINITY;
          for (int64_t yy = 0; yy < h; ++yy)
            for (int64_t xx = 0; xx < w; ++xx) best = std::min(best, sq_dist(fd[i].select(1, y).select(1, x), fd[j].select(1, yy).select(1, xx)));
          d.push_back(best);
        }
        std::sort(d.begin(), d.end());
        double sum = 0;
        for (int64_t t = 0; t < k; ++t) sum += d[static_cast<size_t>(t)];
        out[i][y][x] = sum / static_cast<double>(k);
      }
  return out;
}

std::vector<std::vector<int64_t>> all_others(int64_t n) {
  std::vector<std::vector<int64_t>> refs(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      if (j != i) refs[static_cast<size_t>(i)].push_back(j);
  return refs;
}

torch::Tensor as_tensor(const std::vector<std::vector<int64_t>>& refs) {
  std::vector<int64_t> flat;
  for (const auto& row : refs) flat.insert(flat.end(), row.begin(), row.end());
  return torch::tensor(flat, torch::kInt64).view({static_cast<int64_t>(refs.size()), -1});
}

asd_status status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const asd::Error& e) {
    return e.status();
  }
  return ASD_OK;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Position-aware matching
// ---------------------------------------------------------------------------------------------------------

TEST(LocalMatching, MatchesBruteForceForEveryRadiusAndChunk) {
  torch::manual_seed(3);
  const torch::Tensor q = torch::randn({3, 7, 5, 6}) + 2;  // an offset, as ReLU features have: the centring must handle it
  const torch::Tensor bank = torch::randn({2, 7, 5, 6}) + 2;
  for (int64_t r : {0, 1, 2, 4}) {
    const torch::Tensor expected = brute_local(q, bank, r);
    // 5*6 positions x (7 + 2) floats x 4 bytes = 1080 bytes per query: 1080 gives one query per chunk, the default all three.
    for (int64_t bytes : {int64_t{1080}, asd::kDefaultMaxChunkBytes}) {
      const double err = max_abs_error(asd::local_min_squared_distance(q, bank, r, bytes), expected);
      EXPECT_LE(err, 1e-4) << "radius " << r << ", chunk bytes " << bytes;
    }
  }
  // Radius 0 compares a patch with the same cell of each map only: for a bank holding the query itself, 0 everywhere.
  EXPECT_LE(asd::local_min_squared_distance(q.narrow(0, 0, 1), torch::cat({bank, q.narrow(0, 0, 1)}), 0).max().item<float>(), 1e-4);
  // A radius that covers the grid is the global nearest neighbour of eq. 14 over all the maps' rows.
  const torch::Tensor rows = bank.permute({0, 2, 3, 1}).reshape({-1, 7});
  const torch::Tensor global = asd::min_squared_distance(q.permute({0, 2, 3, 1}).reshape({-1, 7}), rows, 1000).view({3, 5, 6});
  EXPECT_LE(max_abs_error(asd::local_min_squared_distance(q, bank, 5), global), 1e-4);
  EXPECT_LE(max_abs_error(asd::local_min_squared_distance(q, bank, 100), global), 1e-4);
  EXPECT_EQ(status_of([&] { asd::local_min_squared_distance(q, bank, -1); }), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(status_of([&] { asd::local_min_squared_distance(q, bank.narrow(2, 0, 4), 1); }), ASD_ERR_INVALID_ARGUMENT);
}

TEST(LocalMatching, BankErrorMapUsesEachMapsGridAndRefusesAnotherGrid) {
  torch::manual_seed(5);
  asd::PrototypeBank bank("test", {3, 5});
  const torch::Tensor shots = torch::randn({2, 8, 4, 6});
  bank.add_features("tile", shots);
  EXPECT_EQ(bank.layout("tile").maps, 2);
  EXPECT_EQ(bank.layout("tile").grid_h, 4);
  EXPECT_EQ(bank.layout("tile").grid_w, 6);
  const torch::Tensor test = torch::randn({2, 8, 4, 6});
  for (int64_t r : {0, 1, 3}) {
    EXPECT_LE(max_abs_error(bank.error_map("tile", test, r), brute_local(test, shots, r)), 1e-4) << r;
    EXPECT_LE(max_abs_error(bank.error_map("tile", test[1], r), brute_local(test.narrow(0, 1, 1), shots, r)[0]), 1e-4) << r;
  }
  // Global (the default, -1) is unchanged: the same as before position-aware matching existed.
  EXPECT_TRUE(torch::equal(bank.error_map("tile", test), bank.error_map("tile", test, -1)));
  // Test features on another grid have no cell-to-cell correspondence with the bank.
  EXPECT_EQ(status_of([&] { bank.error_map("tile", torch::randn({1, 8, 6, 4}), 1); }), ASD_ERR_INVALID_ARGUMENT);
}

// ---------------------------------------------------------------------------------------------------------
// Bank views
// ---------------------------------------------------------------------------------------------------------

TEST(BankViews, DihedralBanksOfAnImageAndOfItsMirrorAgreeAndHoldTheMirror) {
  torch::NoGradGuard no_grad;
  asd::ResNet18 net = random_resnet(21);
  const asd::PrototypeExtractor extract = [&](const torch::Tensor& x) { return asd::prototype_features(*net, x); };
  torch::manual_seed(6);
  const torch::Tensor shot = torch::rand({1, 3, 64, 64});
  const torch::Tensor mirror = shot.flip({3});
  const asd::BankViews rot4{{0, 90, 180, 270}, false}, d8{{0, 90, 180, 270}, true};
  EXPECT_EQ(d8.count(), 8);

  asd::PrototypeBank bank("resnet18", {128, 256});
  bank.add_images("a8", shot, extract, d8);
  bank.add_images("b8", mirror, extract, d8);
  bank.add_images("a4", shot, extract, rot4);
  bank.add_images("b4", mirror, extract, rot4);
  EXPECT_EQ(bank.prototypes("a8").size(0), 2 * bank.prototypes("a4").size(0));
  EXPECT_EQ(bank.layout("a8").views, d8);
  EXPECT_EQ(bank.layout("a8").maps, 8);

  // The 8 views of an image and of its mirror are the same 8 images: the same map for any query, here a mirrored one.
  const torch::Tensor query = extract(torch::rand({1, 3, 64, 64}).flip({3}));
  const torch::Tensor ea = bank.error_map("a8", query), eb = bank.error_map("b8", query);
  const double scale = ea.abs().max().item<double>();
  std::cout << "  dihedral banks of an image and of its mirror: max |E_a - E_b| " << max_abs_error(ea, eb) << " (E up to " << scale << ")\n";
  EXPECT_LE(max_abs_error(ea, eb), 1e-5 * scale);
  for (int64_t r : {1, 2}) EXPECT_LE(max_abs_error(bank.error_map("a8", query, r), bank.error_map("b8", query, r)), 1e-5 * scale) << r;
  // With the 4 rotations only, the two banks differ: the mirror is not among the rotations of this (asymmetric) image.
  EXPECT_GT(max_abs_error(bank.error_map("a4", query), bank.error_map("b4", query)), 1e-3 * scale);
  // The mirrored shot is in the dihedral bank (E = 0 up to float32 cancellation), not in the rotations' bank.
  const torch::Tensor psi_mirror = extract(mirror);
  EXPECT_LE(bank.error_map("a8", psi_mirror).max().item<double>(), 1e-4 * scale);
  EXPECT_GT(bank.error_map("a4", psi_mirror).mean().item<double>(), 1e-2 * scale);

  // Appending other views to a category is refused; replacing it is not, and a failed replacement keeps the old rows.
  EXPECT_EQ(status_of([&] { bank.add_images("a4", shot, extract, d8); }), ASD_ERR_INVALID_ARGUMENT);
  const torch::Tensor before = bank.prototypes("a4").clone();
  EXPECT_EQ(status_of([&] { bank.replace_images("a4", shot, extract, asd::BankViews{{45}, false}); }), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(torch::equal(bank.prototypes("a4"), before));
  bank.replace_images("a4", shot, extract, d8);
  EXPECT_TRUE(torch::equal(bank.prototypes("a4"), bank.prototypes("a8")));
  EXPECT_EQ(bank.layout("a4").views, d8);
}

TEST(BankViews, LayoutSurvivesSaveAndLoadAndOldFilesKeepTheirRotations) {
  TempDir dir;
  torch::manual_seed(11);
  asd::PrototypeBankOptions options;
  options.horizontal_flip = true;
  asd::PrototypeBank bank("resnet18-onnx_export", {4, 4}, options);
  bank.add_features("grid", torch::randn({3, 8, 4, 5}));
  asd::PrototypeExtractor extract = [](const torch::Tensor& x) { return torch::nn::functional::avg_pool2d(x.repeat({1, 3, 1, 1}).narrow(1, 0, 8), torch::nn::functional::AvgPool2dFuncOptions(8)); };
  bank.add_images("views", torch::rand({1, 3, 32, 32}), extract);
  const std::string path = (dir.path() / "bank.safetensors").string();
  bank.save(path);
  const asd::PrototypeBank back = asd::PrototypeBank::load(path);
  EXPECT_TRUE(back.options().horizontal_flip);
  for (const char* c : {"grid", "views"}) {
    EXPECT_EQ(back.layout(c).views, bank.layout(c).views) << c;
    EXPECT_EQ(back.layout(c).maps, bank.layout(c).maps) << c;
    EXPECT_EQ(back.layout(c).grid_h, bank.layout(c).grid_h) << c;
  }
  EXPECT_EQ(back.layout("views").maps, 8);
  const torch::Tensor test = torch::randn({2, 8, 4, 5});
  EXPECT_TRUE(torch::equal(back.error_map("grid", test, 1), bank.error_map("grid", test, 1)));

  // A bank file written before views and layouts were recorded: its rotations, no flip, an unknown grid. Position-aware
  // matching then needs a row count that is whole maps of the test grid.
  const std::string old = (dir.path() / "old.safetensors").string();
  asd::TensorMap m;
  m.set("bottle", bank.prototypes("grid"));  // 60 rows = 3 maps of 4x5
  asd::safetensors::save(old, m, {{"format", "anomalysd.prototype_bank"}, {"backbone", "b"}, {"feature_dims", "4,4"}, {"channels", "8"},
                                  {"rotations_deg", "0,90,180,270"}});
  const asd::PrototypeBank legacy = asd::PrototypeBank::load(old);
  EXPECT_EQ(legacy.layout("bottle").views, (asd::BankViews{{0, 90, 180, 270}, false}));
  EXPECT_EQ(legacy.layout("bottle").grid_h, -1);
  EXPECT_LE(max_abs_error(legacy.error_map("bottle", test, 1), bank.error_map("grid", test, 1)), 1e-6);
  EXPECT_EQ(status_of([&] { legacy.error_map("bottle", torch::randn({1, 8, 7, 7}), 1); }), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(torch::equal(legacy.error_map("bottle", test), bank.error_map("grid", test)));
}

// ---------------------------------------------------------------------------------------------------------
// Mutual (transductive) scoring
// ---------------------------------------------------------------------------------------------------------

TEST(MutualScoring, CountOfSmallestValuesIsTheFloorOfTheFractionAtLeastOne) {
  EXPECT_EQ(asd::mutual_count(0.3, 82), 24);   // 24.6
  EXPECT_EQ(asd::mutual_count(0.3, 10), 3);    // 0.3 * 10 = 3.0000000000000004 in floating point
  EXPECT_EQ(asd::mutual_count(0.29, 100), 29); // 28.999999999999996 in floating point: the guard keeps 29
  EXPECT_EQ(asd::mutual_count(0.3, 3), 1);
  EXPECT_EQ(asd::mutual_count(0.3, 1), 1);
  EXPECT_EQ(asd::mutual_count(1.0, 7), 7);
  EXPECT_EQ(status_of([] { asd::mutual_count(0.0, 5); }), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(status_of([] { asd::mutual_count(1.5, 5); }), ASD_ERR_INVALID_ARGUMENT);
}

TEST(MutualScoring, MatchesBruteForceWithAllReferencesAndWithACap) {
  torch::manual_seed(17);
  const int64_t n = 6, c = 5, h = 3, w = 4, p = h * w;
  const torch::Tensor f = torch::randn({n, c, h, w}) + 3;
  asd::MutualOptions o;
  for (double fraction : {0.3, 0.5, 1.0}) {
    o.fraction = fraction;
    const int64_t k = asd::mutual_count(fraction, n - 1);
    const torch::Tensor expected = brute_mutual(f, all_others(n), k);
    for (int64_t bytes : {p * p * 4, p * p * 4 * 2, asd::kDefaultMaxChunkBytes}) {  // 1, 2, all partners per block
      o.max_chunk_bytes = bytes;
      const torch::Tensor m = asd::mutual_scores(f, torch::Tensor(), o);
      ASSERT_EQ(m.sizes(), torch::IntArrayRef({n, h, w}));
      EXPECT_LE(max_abs_error(m, expected), 1e-4) << "fraction " << fraction << ", chunk " << bytes;
    }
  }
  // A cap: 3 references per image, not symmetric (image 0 refers to 1, image 1 not to 0), one of each direction of some pairs.
  const std::vector<std::vector<int64_t>> refs{{1, 2, 3}, {2, 4, 5}, {0, 1, 5}, {5, 4, 0}, {0, 3, 2}, {1, 3, 4}};
  o = asd::MutualOptions{};
  o.fraction = 0.67;  // floor(0.67 * 3) = 2 smallest of 3
  const torch::Tensor capped = asd::mutual_scores(f, as_tensor(refs), o);
  EXPECT_LE(max_abs_error(capped, brute_mutual(f, refs, 2)), 1e-4);
  // The mean over the smallest differs from the minimum (k = 1): the test above can tell a wrong k.
  EXPECT_GT(max_abs_error(capped, brute_mutual(f, refs, 1)), 1e-2);
}

TEST(MutualScoring, AnImageSeenByOthersScoresLowAndAnOddPatchHigh) {
  // 5 copies of one random map plus noise, and one copy with a patch replaced: M is high at that patch only.
  torch::manual_seed(23);
  const torch::Tensor base = torch::randn({1, 8, 4, 4});
  torch::Tensor f = base.repeat({5, 1, 1, 1}) + 0.01 * torch::randn({5, 8, 4, 4});
  f[2].select(1, 1).select(1, 2).add_(torch::full({8}, 5.0));
  const torch::Tensor m = asd::mutual_scores(f, torch::Tensor(), {});
  const double odd = m[2][1][2].item<double>();
  m[2][1][2] = 0;
  EXPECT_GT(odd, 100 * m.max().item<double>());
}

TEST(MutualScoring, RefusesBadReferenceTables) {
  const torch::Tensor f = torch::randn({3, 2, 2, 2});
  const auto bad = [&](std::vector<std::vector<int64_t>> refs) { return status_of([&] { asd::mutual_scores(f, as_tensor(refs), {}); }); };
  EXPECT_EQ(bad({{1}, {0}, {0}}), ASD_OK);
  EXPECT_EQ(bad({{0}, {0}, {0}}), ASD_ERR_INVALID_ARGUMENT);          // itself
  EXPECT_EQ(bad({{1, 1}, {0, 2}, {0, 1}}), ASD_ERR_INVALID_ARGUMENT);  // twice the same
  EXPECT_EQ(bad({{3}, {0}, {0}}), ASD_ERR_INVALID_ARGUMENT);          // out of range
  EXPECT_EQ(status_of([&] { asd::mutual_scores(f.narrow(0, 0, 1), torch::Tensor(), {}); }), ASD_ERR_INVALID_ARGUMENT);
}
