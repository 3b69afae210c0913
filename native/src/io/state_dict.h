// Loading and saving a torch::nn::Module's parameters and buffers by their checkpoint names.
//
// Modules register children under the diffusers / transformers / torchvision names, so a module's
// named_parameters() keys ARE the checkpoint keys ("down_blocks.0.resnets.1.conv1.weight"): loading is a
// lookup, never a renaming table.
#pragma once

#include <functional>
#include <string>

#include <torch/torch.h>

#include "io/tensor_map.h"

namespace asd {

struct LoadOptions {
  /// Tensors in the file that the module does not have: error (true) or ignore (false).
  bool reject_unexpected = false;
  /// Optional key rewriter applied to file keys before lookup (e.g. VAE attention's old spelling). Given a
  /// file key and its tensor, returns the module key (or "" to skip) and may reshape the tensor.
  std::function<std::string(const std::string&, torch::Tensor&)> remap;
};

/// Copies every parameter and buffer of `module` from `weights` (converted to the module's dtype/device).
/// Errors name `weights.source()`, the key, and for shape mismatches the expected and found shapes:
/// ASD_ERR_NOT_FOUND (a missing key), ASD_ERR_FORMAT (a shape mismatch or an unexpected key).
void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const LoadOptions& options = {});

/// The module's parameters and buffers under their checkpoint names (detached, same device/dtype).
TensorMap state_dict(const torch::nn::Module& module);

}  // namespace asd
