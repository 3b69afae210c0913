// Perceptual distance map D(x, x_hat) of eq. 16-17 (LPIPS v0.1, Zhang et al. 2018, "spatial" variant):
//
//   f_l = phi_l((x - shift) / scale)                       trunk features, layer l
//   n_l = f_l / (sqrt(sum_c f_l^2) + 1e-10)                 unit-normalised over channels
//   D_l = sum_c w_l[c] * (n_l(x) - n_l(x_hat))[c]^2         eq. 16 (the 1x1 linear layer lin{l})
//   D   = sum_l Upsample_bilinear(D_l, HxW, align_corners=false)   eq. 17
//
// Two trunks (PerceptualDistance):
//  - lpips_alex: AlexNet conv1..conv5 ReLU outputs with the real LPIPS v0.1 weights lin{0..4}.model.1.weight
//    ([1,C,1,1], C = 64,192,384,256,256; ../weights/lpips/alex_v0.1.safetensors) and LPIPS' input scaling
//    shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450). This is the paper's distance.
//  - resnet18_uniform: the offline fallback when no AlexNet weights exist. Same formula on ResNet18
//    layer1..layer3 (64, 128, 256 channels) with uniform weights w_l[c] = 1/C_l, so D_l = ||n_l(x) -
//    n_l(x_hat)||^2 / C_l is the channel mean of the squared difference of unit vectors, in [0, 4/C_l]
//    (each layer's weights sum to 1; the deepest layer thus counts least per position); the input in
//    [-1,1] is mapped to [0,1] and then through the ResNet's own ImagePreprocess. No LPIPS shift/scale.
//    These weights were not learned for perceptual similarity: it is a distance, not LPIPS.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "io/tensor_map.h"
#include "models/backbones.h"

namespace asd {

enum class PerceptualDistance { lpips_alex, resnet18_uniform };

std::string to_string(PerceptualDistance d);
/// "lpips_alex" | "resnet18_uniform"; ASD_ERR_UNSUPPORTED otherwise.
PerceptualDistance perceptual_distance_from_string(const std::string& s);

class Lpips {
 public:
  /// LPIPS v0.1 with an AlexNet trunk. `net_weights`: torchvision names features.{0,3,6,8,10}.{weight,bias};
  /// `lin_weights`: lin{0..4}.model.1.weight (both may be the same map; other keys are ignored).
  /// Errors: ASD_ERR_NOT_FOUND for a missing key, ASD_ERR_FORMAT for a wrong shape (naming the source).
  static Lpips alex(const TensorMap& net_weights, const TensorMap& lin_weights);
  /// Same, from an already built trunk and the five linear weights ([1,C_l,1,1] each, C_l as above).
  static Lpips alex(AlexNetFeatures net, std::vector<torch::Tensor> lin_weights);
  /// The offline distance on a ResNet18 trunk (layer1..layer3, uniform weights 1/C_l).
  static Lpips resnet18_uniform(ResNet18 net);

  /// in0, in1: [B,3,H,W] float images in [-1,1] (not checked), any device (moved to the model's device).
  /// Returns D (eq. 17) as [B,1,H,W] float32 on the model's device; D >= 0, D(x,x) = 0, symmetric.
  /// ASD_ERR_INVALID_ARGUMENT if the shapes differ or are not [B,3,H,W]; the AlexNet trunk needs H, W >= 63.
  /// Gradients flow to the inputs unless the caller holds a torch::NoGradGuard.
  torch::Tensor distance_map(const torch::Tensor& in0, const torch::Tensor& in1) const;
  /// The same for items that share references: D(refs[ref_of_item[i]], others[i]) for refs [U,3,H,W] and others [B,3,H,W]
  /// (one trunk pass over the U + B images, so a reference compared with many images is processed once).
  /// ASD_ERR_INVALID_ARGUMENT for mismatched sizes or an index out of range.
  torch::Tensor distance_map(const torch::Tensor& refs, const std::vector<int64_t>& ref_of_item, const torch::Tensor& others) const;

  /// The per-layer weights w_l as [1,C_l,1,1] tensors (for inspection and tests).
  const std::vector<torch::Tensor>& layer_weights() const { return lin_; }
  PerceptualDistance kind() const { return kind_; }
  torch::Device device() const { return device_; }
  /// Moves the trunk and the weights to `device`.
  void to(const torch::Device& device);

 private:
  Lpips() = default;
  std::vector<torch::Tensor> features(const torch::Tensor& x) const;

  PerceptualDistance kind_ = PerceptualDistance::lpips_alex;
  mutable AlexNetFeatures alex_{nullptr};  // forward() of a module is non-const
  mutable ResNet18 resnet_{nullptr};
  std::vector<torch::Tensor> lin_;
  torch::Device device_ = torch::kCPU;
};

}  // namespace asd
