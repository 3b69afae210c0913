// DDIM / DDPM schedulers: the golden DDIM case (diffusers 0.21 on Stable Diffusion's scheduler config), and
// values computed by hand from diffusers' formulas for the spacings, DDPM's posterior and the errors.
#include <cmath>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd.h"
#include "core/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "schedulers/ddim.h"
#include "schedulers/ddpm.h"
#include "schedulers/noise_schedule.h"
#include "test_util.h"

using asd::test::max_abs_error;
using asd::test::shared_path;
namespace sch = asd::schedulers;

namespace {

nlohmann::json golden_config_json() { return asd::JsonConfig::load(shared_path("golden/scheduler_ddim/config.json")).json(); }

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// A config with the given spacing; everything else diffusers' defaults.
sch::NoiseScheduleConfig spacing_config(int64_t T, sch::TimestepSpacing spacing, int64_t steps_offset = 0) {
  sch::NoiseScheduleConfig c;
  c.num_train_timesteps = T;
  c.timestep_spacing = spacing;
  c.steps_offset = steps_offset;
  return c;
}

// alphas_cumprod of the linear schedule by an explicit product in double: prod_{i<=t} (1 - beta_i),
// beta_i = beta_start + i (beta_end - beta_start) / (T - 1).
double linear_acp(int64_t t, int64_t T = 1000, double beta_start = 0.0001, double beta_end = 0.02) {
  double p = 1.0;
  for (int64_t i = 0; i <= t; ++i) p *= 1.0 - (beta_start + static_cast<double>(i) * (beta_end - beta_start) / static_cast<double>(T - 1));
  return p;
}

asd::Error expect_unsupported(const nlohmann::json& j, const std::string& key) {
  try {
    sch::DDIMSchedulerConfig::from_json(asd::JsonConfig(j, "scheduler/scheduler_config.json"));
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED) << e.what();
    EXPECT_NE(std::string(e.what()).find("'" + key + "'"), std::string::npos) << "message does not name " << key << ": " << e.what();
    std::cout << "  " << e.what() << "\n";
    return e;
  }
  ADD_FAILURE() << "config with unsupported '" << key << "' was accepted";
  return asd::Error(ASD_OK, "");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// DDIM golden (golden/scheduler_ddim, diffusers 0.21 DDIMScheduler)

TEST(DdimGolden, AlphasCumprodAndTimesteps) {
  const asd::TensorMap io = asd::safetensors::load(shared_path("golden/scheduler_ddim/io.safetensors"));
  sch::DDIMScheduler s = sch::DDIMScheduler::load(shared_path("golden/scheduler_ddim/config.json"));
  EXPECT_FALSE(s.config().set_alpha_to_one);
  EXPECT_EQ(s.config().schedule.beta_schedule, sch::BetaSchedule::kScaledLinear);
  const double err = max_abs_error(s.alphas_cumprod(), io.at("alphas_cumprod"));
  std::cout << "  [scheduler_ddim] alphas_cumprod max abs error = " << err << "\n";
  EXPECT_LE(err, 1e-6);
  EXPECT_DOUBLE_EQ(s.final_alpha_cumprod(), static_cast<double>(io.at("alphas_cumprod")[0].item<float>()));
  EXPECT_EQ(to_vector(s.set_timesteps(50)), to_vector(io.at("timesteps_50")));
  EXPECT_EQ(s.timesteps()[0].item<int64_t>(), 981);  // leading, step ratio 20, steps_offset 1
  EXPECT_EQ(s.timesteps()[49].item<int64_t>(), 1);
}

class DdimGoldenCase : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(DdimGoldenCase, StrengthStartAndLoop) {
  const auto& [prediction, s_percent] = GetParam();
  const std::string prefix = prediction + "_s" + std::to_string(s_percent) + "_";
  const asd::TensorMap io = asd::safetensors::load(shared_path("golden/scheduler_ddim/io.safetensors"));
  nlohmann::json j = golden_config_json();
  j["prediction_type"] = prediction;
  sch::DDIMScheduler s(sch::DDIMSchedulerConfig::from_json(asd::JsonConfig(j, "golden config")));

  const torch::Tensor ts = sch::timesteps_for_strength(s.set_timesteps(50), s_percent / 100.0);
  ASSERT_EQ(to_vector(ts), to_vector(io.at(prefix + "timesteps")));

  const torch::Tensor start = s.add_noise(io.at(prefix + "x0"), io.at(prefix + "noise"), ts[0]);
  const double start_err = max_abs_error(start, io.at(prefix + "start"));
  EXPECT_LE(start_err, 1e-6);

  // The loop, run from the golden start with the stand-in model output 0.5 x_t + 0.1 sin(t), eta 0.
  torch::Tensor x = io.at(prefix + "start");
  for (const int64_t t : to_vector(ts)) {
    const torch::Tensor model_output = 0.5 * x + 0.1 * std::sin(static_cast<double>(t));
    x = s.step(model_output, t, x);
  }
  const double final_err = max_abs_error(x, io.at(prefix + "final"));
  std::cout << "  [scheduler_ddim " << prefix << "] start max abs error = " << start_err << ", final max abs error = " << final_err
            << " (" << ts.size(0) << " steps)\n";
  EXPECT_LE(final_err, 1e-4);
  EXPECT_GT(max_abs_error(x, io.at(prefix + "start")), 1e-2);  // the loop did change the sample
}

INSTANTIATE_TEST_SUITE_P(Ddim, DdimGoldenCase,
                         ::testing::Combine(::testing::Values("epsilon", "v_prediction"), ::testing::Values(20, 40, 80, 100)),
                         [](const auto& info) { return std::get<0>(info.param) + "_s" + std::to_string(std::get<1>(info.param)); });

// ---------------------------------------------------------------------------------------------------------
// Timestep spacings (diffusers 0.21 set_timesteps, computed by hand)

TEST(SchedulerSpacing, LeadingWithStepsOffset) {
  sch::NoiseSchedule s(spacing_config(1000, sch::TimestepSpacing::kLeading, 1));
  EXPECT_EQ(to_vector(s.timesteps(10)), (std::vector<int64_t>{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}));
  // T // n = 2 for T = 10, n = 4: arange(4) * 2 reversed.
  sch::NoiseSchedule small(spacing_config(10, sch::TimestepSpacing::kLeading, 0));
  EXPECT_EQ(to_vector(small.timesteps(4)), (std::vector<int64_t>{6, 4, 2, 0}));
}

TEST(SchedulerSpacing, Trailing) {
  sch::NoiseSchedule s(spacing_config(1000, sch::TimestepSpacing::kTrailing));
  EXPECT_EQ(to_vector(s.timesteps(10)), (std::vector<int64_t>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
  // T = 10, n = 4: round(arange(10, 0, -2.5)) = round([10, 7.5, 5, 2.5]) = [10, 8, 5, 2] (half to even), minus 1.
  sch::NoiseSchedule small(spacing_config(10, sch::TimestepSpacing::kTrailing));
  EXPECT_EQ(to_vector(small.timesteps(4)), (std::vector<int64_t>{9, 7, 4, 1}));
}

TEST(SchedulerSpacing, Linspace) {
  sch::NoiseSchedule s(spacing_config(1000, sch::TimestepSpacing::kLinspace));
  EXPECT_EQ(to_vector(s.timesteps(10)), (std::vector<int64_t>{999, 888, 777, 666, 555, 444, 333, 222, 111, 0}));
  // linspace(0, 999, 7) = [0, 166.5, 333, 499.5, 666, 832.5, 999]; np.round: 166.5 -> 166, 499.5 -> 500, 832.5 -> 832.
  EXPECT_EQ(to_vector(s.timesteps(7)), (std::vector<int64_t>{999, 832, 666, 500, 333, 166, 0}));
}

TEST(SchedulerSpacing, RejectsStepCountsOutsideRange) {
  sch::NoiseSchedule s(spacing_config(1000, sch::TimestepSpacing::kLeading));
  EXPECT_THROW(s.timesteps(0), asd::Error);
  EXPECT_THROW(s.timesteps(1001), asd::Error);
  EXPECT_EQ(s.timesteps(1000).size(0), 1000);
}

// ---------------------------------------------------------------------------------------------------------
// Strength rule (StableDiffusionInpaintPipeline.get_timesteps)

TEST(SchedulerStrength, CutsTheFirstStepsOff) {
  const torch::Tensor ts = torch::arange(90, -1, -10, torch::kInt64);  // 10 steps: 90 .. 0
  EXPECT_EQ(to_vector(sch::timesteps_for_strength(ts, 1.0)), to_vector(ts));
  EXPECT_EQ(to_vector(sch::timesteps_for_strength(ts, 0.3)), (std::vector<int64_t>{20, 10, 0}));  // init 3, t_start 7
  EXPECT_EQ(to_vector(sch::timesteps_for_strength(ts, 0.35)), (std::vector<int64_t>{20, 10, 0}));  // int(3.5) = 3
  EXPECT_EQ(sch::timesteps_for_strength(ts, 0.0).size(0), 0);
  EXPECT_EQ(sch::strength_start_index(50, 0.2), 40);
  EXPECT_THROW(sch::timesteps_for_strength(ts, 1.5), asd::Error);
  EXPECT_THROW(sch::timesteps_for_strength(ts, -0.1), asd::Error);
}

// ---------------------------------------------------------------------------------------------------------
// Forward process and v target

TEST(SchedulerNoise, AddNoisePerSampleTimestepsAndVelocity) {
  sch::NoiseSchedule s(sch::NoiseScheduleConfig{});  // linear 1e-4 .. 0.02, T 1000
  const torch::Tensor x0 = torch::full({2, 3, 2, 2}, 0.5f);
  const torch::Tensor noise = torch::full({2, 3, 2, 2}, -1.0f);
  const torch::Tensor t = torch::tensor({0, 999}, torch::kInt64);
  const torch::Tensor xt = s.add_noise(x0, noise, t);
  for (int b = 0; b < 2; ++b) {
    const double a = linear_acp(b == 0 ? 0 : 999);
    const double expected = std::sqrt(a) * 0.5 - std::sqrt(1 - a);
    EXPECT_NEAR(xt[b].max().item<double>(), expected, 1e-5);
    EXPECT_NEAR(xt[b].min().item<double>(), expected, 1e-5);
    const double v = std::sqrt(a) * -1.0 - std::sqrt(1 - a) * 0.5;
    EXPECT_NEAR(s.get_velocity(x0, noise, t)[b].mean().item<double>(), v, 1e-5);
  }
  // A scalar timestep applies to the whole batch.
  EXPECT_EQ(max_abs_error(s.add_noise(x0, noise, torch::tensor(999, torch::kInt64)).select(0, 0), xt[1]), 0.0);
  EXPECT_THROW(s.add_noise(x0, noise, torch::tensor({1, 2, 3}, torch::kInt64)), asd::Error);  // 3 timesteps, batch 2
  EXPECT_THROW(s.add_noise(x0, noise, torch::tensor({0, 1000}, torch::kInt64)), asd::Error);  // out of range
}

// ---------------------------------------------------------------------------------------------------------
// DDPM (diffusers 0.21 DDPMScheduler), by hand

TEST(DdpmSchedule, LinearAlphasCumprodIsTheProductOfOneMinusBeta) {
  sch::DDPMScheduler s(sch::DDPMSchedulerConfig{});
  ASSERT_EQ(s.alphas_cumprod().size(0), 1000);
  for (const int64_t t : {0, 1, 10, 250, 500, 999}) {
    EXPECT_NEAR(s.alphas_cumprod()[t].item<double>(), linear_acp(t), 2e-6) << "t = " << t;
  }
  EXPECT_NEAR(s.alphas_cumprod()[0].item<double>(), 0.9999, 1e-7);  // 1 - beta_start
  // Before set_timesteps DDPM runs all 1000 train steps.
  EXPECT_EQ(s.timesteps().size(0), 1000);
  EXPECT_EQ(s.previous_timestep(500), 499);
}

TEST(DdpmStep, PosteriorMeanPlusVarianceOnConstants) {
  nlohmann::json j = {{"num_train_timesteps", 1000}, {"beta_start", 0.0001}, {"beta_end", 0.02}, {"beta_schedule", "linear"},
                      {"clip_sample", false}, {"prediction_type", "epsilon"}};
  sch::DDPMScheduler s(sch::DDPMSchedulerConfig::from_json(asd::JsonConfig(j, "ddpm")));
  const int64_t t = 500;  // no set_timesteps: prev = 499
  const double a_t = linear_acp(t), a_prev = linear_acp(t - 1);
  const double beta_t = 1 - a_t / a_prev;
  const double x = 0.8, eps = 0.3, z = -0.7;
  const double x0 = (x - std::sqrt(1 - a_t) * eps) / std::sqrt(a_t);
  const double mean = std::sqrt(a_prev) * beta_t / (1 - a_t) * x0 + std::sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t) * x;  // Ho eq. 7
  const double var = (1 - a_prev) / (1 - a_t) * beta_t;
  const torch::Tensor sample = torch::full({1, 4, 3, 3}, x);
  const torch::Tensor out = s.step(torch::full({1, 4, 3, 3}, eps), t, sample, torch::full({1, 4, 3, 3}, z));
  EXPECT_NEAR(out.max().item<double>(), mean + std::sqrt(var) * z, 2e-5);
  EXPECT_NEAR(out.min().item<double>(), mean + std::sqrt(var) * z, 2e-5);
  EXPECT_NEAR(s.variance(t), var, 1e-7);
  // At t = 0 no noise is added and a_prev = 1, so the result is x0_hat itself.
  const torch::Tensor last = s.step(torch::full({1, 4, 3, 3}, eps), 0, sample, torch::full({1, 4, 3, 3}, z));
  const double a0 = linear_acp(0);
  EXPECT_NEAR(last.mean().item<double>(), (x - std::sqrt(1 - a0) * eps) / std::sqrt(a0), 1e-5);
}

TEST(DdpmStep, ClipSampleAndSetTimesteps) {
  sch::DDPMSchedulerConfig config;  // clip_sample defaults to true, range 1
  sch::DDPMScheduler s(config);
  s.set_timesteps(10);
  EXPECT_EQ(to_vector(s.timesteps()), (std::vector<int64_t>{900, 800, 700, 600, 500, 400, 300, 200, 100, 0}));
  EXPECT_EQ(s.previous_timestep(900), 800);
  // epsilon 0 and x_t = 5 give x0_hat = 5 / sqrt(a_t) > 1, clamped to 1.
  const int64_t t = 100;
  const double a_t = linear_acp(t), a_prev = linear_acp(0);
  const double beta_t = 1 - a_t / a_prev;
  const double expected = std::sqrt(a_prev) * beta_t / (1 - a_t) * 1.0 + std::sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t) * 5.0;
  const torch::Tensor out = s.step(torch::zeros({1, 1, 2, 2}), t, torch::full({1, 1, 2, 2}, 5.0), torch::zeros({1, 1, 2, 2}));
  EXPECT_NEAR(out.mean().item<double>(), expected, 1e-5);
}

TEST(DdpmConfig, UnsupportedVarianceTypeNamesTheKey) {
  nlohmann::json j = {{"variance_type", "learned_range"}};
  try {
    sch::DDPMSchedulerConfig::from_json(asd::JsonConfig(j, "ddpm"));
    FAIL() << "learned_range accepted";
  } catch (const asd::Error& e) {
    EXPECT_EQ(e.status(), ASD_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("variance_type"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------
// DDIM by hand: eta > 0, set_alpha_to_one, sample prediction, generator, errors

TEST(DdimStep, EtaNoiseAndFinalAlpha) {
  nlohmann::json j = golden_config_json();
  j["set_alpha_to_one"] = true;
  sch::DDIMScheduler s(sch::DDIMSchedulerConfig::from_json(asd::JsonConfig(j, "ddim")));
  EXPECT_EQ(s.final_alpha_cumprod(), 1.0);
  EXPECT_THROW(s.step(torch::zeros({1, 1}), 981, torch::zeros({1, 1})), asd::Error);  // set_timesteps not called
  s.set_timesteps(50);
  const double a_t = s.schedule().alpha_cumprod(501), a_prev = s.schedule().alpha_cumprod(481);
  const double x = 0.4, eps = -0.2, z = 1.3, eta = 0.5;
  const double x0 = (x - std::sqrt(1 - a_t) * eps) / std::sqrt(a_t);
  const double sigma = eta * std::sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev));
  const double expected = std::sqrt(a_prev) * x0 + std::sqrt(1 - a_prev - sigma * sigma) * eps + sigma * z;
  const torch::Tensor out = s.step(torch::full({2, 2}, eps), 501, torch::full({2, 2}, x), eta, torch::full({2, 2}, z));
  EXPECT_NEAR(out.mean().item<double>(), expected, 1e-5);
  // Last step (t = 1, prev = -19): alpha_prod_t_prev = final_alpha_cumprod = 1, so prev_sample = x0_hat.
  const double a1 = s.schedule().alpha_cumprod(1);
  const torch::Tensor last = s.step(torch::full({2, 2}, eps), 1, torch::full({2, 2}, x));
  EXPECT_NEAR(last.mean().item<double>(), (x - std::sqrt(1 - a1) * eps) / std::sqrt(a1), 1e-5);
}

TEST(DdimStep, SamplePredictionAndGenerator) {
  nlohmann::json j = golden_config_json();
  j["prediction_type"] = "sample";
  sch::DDIMScheduler s(sch::DDIMSchedulerConfig::from_json(asd::JsonConfig(j, "ddim")));
  s.set_timesteps(50);
  const double a_t = s.schedule().alpha_cumprod(501), a_prev = s.schedule().alpha_cumprod(481);
  const double x = 0.4, x0 = 0.1;
  const double eps = (x - std::sqrt(a_t) * x0) / std::sqrt(1 - a_t);
  const torch::Tensor out = s.step(torch::full({2, 2}, x0), 501, torch::full({2, 2}, x));
  EXPECT_NEAR(out.mean().item<double>(), std::sqrt(a_prev) * x0 + std::sqrt(1 - a_prev) * eps, 1e-5);
  // eta > 0 without given noise: the generator's draw, reproducible with the same seed.
  auto g1 = at::make_generator<at::CPUGeneratorImpl>(42);
  auto g2 = at::make_generator<at::CPUGeneratorImpl>(42);
  const torch::Tensor r1 = s.step(torch::full({2, 8}, x0), 501, torch::full({2, 8}, x), 1.0, std::nullopt, g1);
  const torch::Tensor r2 = s.step(torch::full({2, 8}, x0), 501, torch::full({2, 8}, x), 1.0, std::nullopt, g2);
  EXPECT_EQ(max_abs_error(r1, r2), 0.0);
  EXPECT_GT(r1.std().item<double>(), 1e-3);  // noise was added
}

TEST(DdimConfig, UnsupportedValuesNameTheKey) {
  nlohmann::json j = golden_config_json();
  j["beta_schedule"] = "squaredcos_cap_v2";
  expect_unsupported(j, "beta_schedule");
  j = golden_config_json();
  j["trained_betas"] = {0.1, 0.2};
  expect_unsupported(j, "trained_betas");
  j = golden_config_json();
  j["thresholding"] = true;
  expect_unsupported(j, "thresholding");
  j = golden_config_json();
  j["timestep_spacing"] = "karras";
  expect_unsupported(j, "timestep_spacing");
  j = golden_config_json();
  j["prediction_type"] = "flow";
  expect_unsupported(j, "prediction_type");
}

TEST(DdpmStep, VPredictionFromConfigFile) {
  asd::test::TempDir dir;
  const std::string path = (dir.path() / "scheduler_config.json").string();
  {
    std::ofstream out(path);
    out << R"({"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "prediction_type": "v_prediction", "clip_sample": false,
              "variance_type": "fixed_large", "steps_offset": 1})";
  }
  sch::DDPMScheduler s = sch::DDPMScheduler::load(path);
  EXPECT_EQ(s.config().variance_type, sch::VarianceType::kFixedLarge);
  EXPECT_EQ(to_vector(s.set_timesteps(4)), (std::vector<int64_t>{751, 501, 251, 1}));  // leading, ratio 250, offset 1
  // scaled_linear: beta_i = (sqrt(0.00085) + i (sqrt(0.012) - sqrt(0.00085)) / 999)^2, acp = prod (1 - beta_i).
  auto acp = [](int64_t t) {
    double p = 1.0;
    for (int64_t i = 0; i <= t; ++i) {
      const double b = std::sqrt(0.00085) + static_cast<double>(i) * (std::sqrt(0.012) - std::sqrt(0.00085)) / 999.0;
      p *= 1.0 - b * b;
    }
    return p;
  };
  const int64_t t = 501;  // prev = 251
  const double a_t = acp(t), a_prev = acp(251);
  EXPECT_NEAR(s.schedule().alpha_cumprod(t), a_t, 2e-6);
  const double beta_t = 1 - a_t / a_prev;
  const double x = -0.6, v = 0.25, z = 0.9;
  const double x0 = std::sqrt(a_t) * x - std::sqrt(1 - a_t) * v;
  const double mean = std::sqrt(a_prev) * beta_t / (1 - a_t) * x0 + std::sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t) * x;
  const double expected = mean + std::sqrt(beta_t) * z;  // fixed_large: variance = beta_t
  const torch::Tensor out = s.step(torch::full({1, 2, 2, 2}, v), t, torch::full({1, 2, 2, 2}, x), torch::full({1, 2, 2, 2}, z));
  EXPECT_NEAR(out.mean().item<double>(), expected, 2e-5);
  EXPECT_NEAR(s.variance(t), beta_t, 1e-6);
}
