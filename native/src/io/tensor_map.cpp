#include "io/tensor_map.h"

#include "core/error.h"

namespace asd {

void TensorMap::set(const std::string& name, torch::Tensor tensor) {
  auto it = index_.find(name);
  if (it != index_.end()) {
    tensors_[it->second] = std::move(tensor);
    return;
  }
  index_.emplace(name, names_.size());
  names_.push_back(name);
  tensors_.push_back(std::move(tensor));
}

const torch::Tensor* TensorMap::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const torch::Tensor& TensorMap::at(const std::string& name) const {
  const torch::Tensor* t = find(name);
  if (t == nullptr) {
    throw_error(ASD_ERR_NOT_FOUND,
                "tensor '" + name + "' not found" + (source_.empty() ? std::string() : " in '" + source_ + "'"));
  }
  return *t;
}

}  // namespace asd
