// An ordered name -> tensor map: the in-memory form of a safetensors file and of a model's state dict.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

namespace asd {

class TensorMap {
 public:
  /// Inserts `tensor` under `name`, or replaces it in place (keeping its position) if present.
  void set(const std::string& name, torch::Tensor tensor);
  /// nullptr if absent.
  const torch::Tensor* find(const std::string& name) const;
  /// Throws asd::Error(ASD_ERR_NOT_FOUND) naming `name` and `source()` if absent.
  const torch::Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  size_t size() const { return names_.size(); }
  /// Names in insertion (or file) order.
  const std::vector<std::string>& names() const { return names_; }
  const torch::Tensor& tensor(size_t i) const { return tensors_.at(i); }

  /// Where the map came from (a file path), used in error messages; "" when built in memory.
  const std::string& source() const { return source_; }
  void set_source(std::string source) { source_ = std::move(source); }

 private:
  std::vector<std::string> names_;
  std::vector<torch::Tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::string source_;
};

}  // namespace asd
