// Process-wide C API entry points: versions, devices, threads, seeds, and the no-throw contract.
#include <cstring>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "anomalysd.h"

TEST(CApi, VersionsAreReported) {
  const char* engine = nullptr;
  const char* torch_version = nullptr;
  ASSERT_EQ(asd_engine_version(&engine), ASD_OK);
  ASSERT_EQ(asd_torch_version(&torch_version), ASD_OK);
  EXPECT_STREQ(engine, ANOMALYSD_VERSION);
  EXPECT_STREQ(torch_version, TORCH_VERSION);
  EXPECT_EQ(std::string(torch_version).rfind(std::to_string(TORCH_VERSION_MAJOR) + ".", 0), 0u);
}

TEST(CApi, NullOutParametersAreRejected) {
  EXPECT_EQ(asd_engine_version(nullptr), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(asd_last_error()).find("asd_engine_version: out_version is NULL"), std::string::npos) << asd_last_error();
  EXPECT_EQ(asd_cuda_device_count(nullptr, nullptr), ASD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(asd_tensor_map_count(nullptr, nullptr), ASD_ERR_INVALID_ARGUMENT);
}

TEST(CApi, DeviceQueryMatchesLibtorch) {
  int32_t available = -1, count = -1;
  ASSERT_EQ(asd_cuda_device_count(&available, &count), ASD_OK);
  EXPECT_EQ(available, torch::cuda::is_available() ? 1 : 0);
  EXPECT_EQ(count, available ? static_cast<int32_t>(torch::cuda::device_count()) : 0);
  char name[128];
  EXPECT_EQ(asd_cuda_device_name(count, name, sizeof(name)), ASD_ERR_NOT_FOUND);  // one past the last device
  EXPECT_NE(std::string(asd_last_error()).find("no CUDA device"), std::string::npos);
  for (int32_t i = 0; i < count; ++i) {
    ASSERT_EQ(asd_cuda_device_name(i, name, sizeof(name)), ASD_OK);
    EXPECT_GT(std::strlen(name), 0u);
  }
}

TEST(CApi, ThreadCountRoundTrips) {
  int32_t before = 0;
  ASSERT_EQ(asd_get_num_threads(&before), ASD_OK);
  EXPECT_GE(before, 1);
  ASSERT_EQ(asd_set_num_threads(1), ASD_OK);
  int32_t now = 0;
  ASSERT_EQ(asd_get_num_threads(&now), ASD_OK);
  EXPECT_EQ(now, 1);
  EXPECT_EQ(asd_set_num_threads(0), ASD_ERR_INVALID_ARGUMENT);
  ASSERT_EQ(asd_set_num_threads(before), ASD_OK);
}

TEST(CApi, SeedMakesRandomnessRepeatable) {
  ASSERT_EQ(asd_manual_seed(1234), ASD_OK);
  const torch::Tensor a = torch::randn({16});
  ASSERT_EQ(asd_manual_seed(1234), ASD_OK);
  const torch::Tensor b = torch::randn({16});
  EXPECT_TRUE(torch::equal(a, b));
}

TEST(CApi, LastErrorIsThreadLocal) {
  EXPECT_EQ(asd_set_num_threads(-3), ASD_ERR_INVALID_ARGUMENT);
  std::string other;
  std::thread([&] { other = asd_last_error(); }).join();
  EXPECT_EQ(other, "") << "another thread sees this thread's error";
  EXPECT_NE(std::string(asd_last_error()).find("-3"), std::string::npos);
}
