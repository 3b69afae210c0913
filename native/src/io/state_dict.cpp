#include "io/state_dict.h"

#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace asd {

namespace {
std::string shape_str(torch::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}
}  // namespace

void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const LoadOptions& options) {
  std::unordered_map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) targets.emplace(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) targets.emplace(b.key(), b.value());

  const std::string where = weights.source().empty() ? std::string("weights") : "'" + weights.source() + "'";
  std::unordered_map<std::string, torch::Tensor> found;
  for (size_t i = 0; i < weights.size(); ++i) {
    torch::Tensor t = weights.tensor(i);
    std::string key = weights.names()[i];
    if (options.remap) key = options.remap(key, t);
    if (key.empty()) continue;
    if (targets.count(key) == 0) {
      if (options.reject_unexpected) throw_error(ASD_ERR_FORMAT, where + ": unexpected key '" + weights.names()[i] + "'");
      continue;
    }
    found[key] = t;
  }
  torch::NoGradGuard no_grad;
  for (auto& [key, target] : targets) {
    auto it = found.find(key);
    if (it == found.end()) throw_error(ASD_ERR_NOT_FOUND, where + ": missing key '" + key + "' (expected shape " + shape_str(target.sizes()) + ")");
    const torch::Tensor& src = it->second;
    if (src.sizes() != target.sizes()) {
      throw_error(ASD_ERR_FORMAT, where + ": key '" + key + "' has shape " + shape_str(src.sizes()) + ", expected " + shape_str(target.sizes()));
    }
    target.copy_(src.to(target.device(), target.scalar_type()));
  }
}

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(true)) out.set(p.key(), p.value().detach());
  for (const auto& b : module.named_buffers(true)) out.set(b.key(), b.value().detach());
  return out;
}

}  // namespace asd
