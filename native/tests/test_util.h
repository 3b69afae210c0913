// Helpers shared by the GoogleTest files.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace asd::test {

/// A fresh directory under the system temp dir, removed with its content on destruction.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("anomalysd-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Path of `relative` inside ../shared (overridable with the ANOMALYSD_SHARED_DIR environment variable).
inline std::string shared_path(const std::string& relative) {
  const char* env = std::getenv("ANOMALYSD_SHARED_DIR");
  const std::filesystem::path root = env != nullptr ? std::filesystem::path(env) : std::filesystem::path(ANOMALYSD_SHARED_DIR);
  return (root / relative).string();
}

}  // namespace asd::test

#include <torch/torch.h>

namespace asd::test {

/// max |a - b| in float64 (shapes must match).
inline double max_abs_error(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64)).abs().max().item<double>();
}

}  // namespace asd::test
