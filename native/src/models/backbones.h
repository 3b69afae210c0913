// Feature backbones: ResNet18 (prototype features, eq. 12, and the offline perceptual distance) and AlexNet
// (the LPIPS trunk, eq. 16). Both register their children under torchvision's parameter names, so a
// torchvision state dict (or the safetensors conversion of one) loads by lookup (io/state_dict.h).
//
// Known traps, one comment each:
//  - The ONNX ResNet18 shipped in Microsoft.ML.DnnImageFeaturizer.ResNet18 (CNTK export) pads
//    asymmetrically where the stride is 2: conv1 7x7 pads top/left 3, bottom/right 2; the 3x3 stride-2
//    convs and the max pool pad top/left 1, bottom/right 0. torchvision pads symmetrically (3 and 1): that
//    differs where a stride-2 op sees an odd size. Where every stride-2 input is even (any input that is a
//    multiple of 32, the export's fixed 224x224 included) the unused last pad row/column makes the two
//    modes give the same result (tested); onnx_export still documents the export and keeps odd sizes exact
//    on the stem. (pads read off ResNet18.onnx: conv1 [3,3,2,2], max pool and 3x3 s2 convs [1,1,0,0].)
//  - That export takes BGR in 0..255 minus a per-pixel mean image (channel means ~103.06, 115.90, 123.15)
//    and no std division; ImagePreprocess::onnx_resnet18() approximates the mean image by its channel means.
//  - BatchNorm is always eval-mode (running statistics), eps 1e-5; num_batches_tracked is not needed.
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "io/tensor_map.h"

namespace asd {

// ---------------------------------------------------------------------------------------------------------
// Input preprocessing
// ---------------------------------------------------------------------------------------------------------

enum class ChannelOrder { rgb, bgr };

/// How an image in the engine's convention (float RGB in [0, 1], [B,3,H,W]) becomes a backbone's input:
///   y[c] = (x[order(c)] * scale - mean[c]) / std_dev[c]
/// where order(c) picks the source channel for output channel c (identity for rgb, reversed for bgr) and
/// mean/std_dev are given in the backbone's channel order and in the scaled units.
/// Stored beside the weights as safetensors metadata (to_metadata / from_metadata).
struct ImagePreprocess {
  ChannelOrder channel_order = ChannelOrder::rgb;
  double scale = 1.0;
  std::array<double, 3> mean{0.0, 0.0, 0.0};
  std::array<double, 3> std_dev{1.0, 1.0, 1.0};
  /// Optional per-pixel mean [3, h, w] (backbone channel order, scaled units) that replaces `mean` for inputs of
  /// exactly h x w: the CNTK export subtracts a 3x224x224 mean image (tensor "preprocess.mean" of its file).
  torch::Tensor mean_image;

  /// torchvision ImageNet models: RGB, [0,1], mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
  static ImagePreprocess imagenet_torchvision();
  /// The CNTK ONNX ResNet18 export: BGR, 0..255, mean (103.06, 115.90, 123.15) (channel means of the
  /// export's 3x224x224 mean image), std 1.
  static ImagePreprocess onnx_resnet18();

  /// [B,3,H,W] float RGB in [0,1] (any device) -> the backbone's input, same shape/device/dtype.
  /// ASD_ERR_INVALID_ARGUMENT unless the input is 4-D with 3 channels.
  torch::Tensor apply(const torch::Tensor& rgb01) const;

  /// Metadata entries "preprocess.channel_order" ("rgb"|"bgr"), "preprocess.scale", "preprocess.mean",
  /// "preprocess.std" (comma-separated, 17 significant digits).
  std::map<std::string, std::string> to_metadata() const;
  /// Inverse of to_metadata; `fallback` is returned when no "preprocess.*" key is present. A present but
  /// malformed entry is an ASD_ERR_FORMAT error naming `source` and the key.
  static ImagePreprocess from_metadata(const std::map<std::string, std::string>& metadata, const ImagePreprocess& fallback,
                                       const std::string& source = "");
};

// ---------------------------------------------------------------------------------------------------------
// Eval-mode BatchNorm with torchvision's parameter names (weight, bias, running_mean, running_var)
// ---------------------------------------------------------------------------------------------------------

class FrozenBatchNorm2dImpl : public torch::nn::Module {
 public:
  explicit FrozenBatchNorm2dImpl(int64_t channels, double eps = 1e-5);
  /// [B,C,H,W] -> (x - running_mean) / sqrt(running_var + eps) * weight + bias.
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight, bias, running_mean, running_var;
  double eps;
};
TORCH_MODULE(FrozenBatchNorm2d);

// ---------------------------------------------------------------------------------------------------------
// ResNet18
// ---------------------------------------------------------------------------------------------------------

enum class ResNetPadding {
  torchvision,  ///< symmetric padding (torchvision's resnet18)
  onnx_export,  ///< the CNTK ONNX export's asymmetric padding at stride 2 (see the file comment)
};

std::string to_string(ResNetPadding p);
/// "torchvision" | "onnx_export"; ASD_ERR_UNSUPPORTED otherwise.
ResNetPadding resnet_padding_from_string(const std::string& s);

/// torchvision BasicBlock: conv1 (3x3, stride s), bn1, relu, conv2 (3x3), bn2, + identity or downsample
/// (downsample.0 = 1x1 conv stride s, downsample.1 = BN), relu.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride, ResNetPadding padding);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  ResNetPadding padding_;
  int64_t stride_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  FrozenBatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
  torch::nn::Conv2d down_conv_{nullptr};
  FrozenBatchNorm2d down_bn_{nullptr};
};
TORCH_MODULE(BasicBlock);

/// The four stage outputs of a ResNet. Spatial strides 4, 8, 16, 32; channels 64, 128, 256, 512. Stages
/// after `last_stage` (see ResNet18Impl::forward) are undefined tensors.
struct ResNetFeatures {
  torch::Tensor stem;  ///< relu(bn1(conv1(x))) before the max pool: 64 channels, stride 2
  torch::Tensor layer1, layer2, layer3, layer4;
};

/// ResNet18 trunk (no avgpool/fc: "fc.*" keys in a checkpoint are ignored by load_state_dict).
/// Parameter names: conv1, bn1, layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}, layer{2,3,4}.0.downsample.{0,1}.
class ResNet18Impl : public torch::nn::Module {
 public:
  /// `blocks`: BasicBlocks per stage; torchvision resnet18 is {2, 2, 2, 2}, the CNTK ONNX export has {2, 2, 2, 3}
  /// (read from its file's "blocks" metadata by load_resnet18).
  explicit ResNet18Impl(ResNetPadding padding = ResNetPadding::torchvision,
                        ImagePreprocess preprocess = ImagePreprocess::imagenet_torchvision(),
                        std::array<int64_t, 4> blocks = {2, 2, 2, 2});

  /// x: the already preprocessed input [B,3,H,W]. Returns layer1..layer`last_stage` (1..4); later stages
  /// are not computed. Sizes: torchvision padding ceil(H/4), ceil(H/8), ceil(H/16), ceil(H/32); at 224x224
  /// 56/28/14/7 (after conv1 112, after the max pool 56) in both modes. onnx_export floors instead, and
  /// its padded 3x3 and unpadded 1x1 stride-2 paths disagree on odd sizes, so it requires H and W to be
  /// multiples of 2^(last_stage+1) for last_stage >= 2 (ASD_ERR_INVALID_ARGUMENT otherwise).
  ResNetFeatures forward(const torch::Tensor& x, int last_stage = 4);

  /// Global average pool of layer4: [B, 512] (the 512-d output of the ONNX model, without its fc).
  torch::Tensor pooled(const torch::Tensor& x);

  /// Convenience: preprocess().apply(rgb01) then forward.
  ResNetFeatures features_from_rgb01(const torch::Tensor& rgb01, int last_stage = 4);

  ResNetPadding padding() const { return padding_; }
  const ImagePreprocess& preprocess() const { return preprocess_; }
  void set_preprocess(const ImagePreprocess& p) { preprocess_ = p; }

  /// Deterministic random weights for tests (kaiming-normal convs, BN with random affine/statistics).
  void init_random(uint64_t seed);

 private:
  ResNetPadding padding_;
  ImagePreprocess preprocess_;
  torch::nn::Conv2d conv1_{nullptr};
  FrozenBatchNorm2d bn1_{nullptr};
  torch::nn::Sequential layer1_{nullptr}, layer2_{nullptr}, layer3_{nullptr}, layer4_{nullptr};
};
TORCH_MODULE(ResNet18);

/// Loads a ResNet18 from a safetensors file with torchvision names. The padding mode and preprocessing are
/// read from the file's metadata ("padding": "torchvision"|"onnx_export", "preprocess.*") when present,
/// else `padding` / `preprocess` are used. Errors: those of safetensors::load and load_state_dict.
ResNet18 load_resnet18(const std::string& path, ResNetPadding padding = ResNetPadding::torchvision,
                       const ImagePreprocess& preprocess = ImagePreprocess::imagenet_torchvision());

/// The metadata load_resnet18 reads back ("padding" + preprocess.*), for writing beside the weights.
std::map<std::string, std::string> resnet18_metadata(const ResNet18Impl& net);

// ---------------------------------------------------------------------------------------------------------
// AlexNet (torchvision `features`)
// ---------------------------------------------------------------------------------------------------------

/// torchvision alexnet().features: Conv(3,64,11,s4,p2) ReLU MaxPool(3,2) Conv(64,192,5,p2) ReLU MaxPool(3,2)
/// Conv(192,384,3,p1) ReLU Conv(384,256,3,p1) ReLU Conv(256,256,3,p1) ReLU [MaxPool]. Convs are
/// features.{0,3,6,8,10}.{weight,bias}.
class AlexNetFeaturesImpl : public torch::nn::Module {
 public:
  AlexNetFeaturesImpl();
  /// x: preprocessed input [B,3,H,W] (H, W >= 63 so that every stage is non-empty).
  /// Returns the 5 ReLU outputs after conv1..conv5 (features indices 1, 4, 7, 9, 11), channels
  /// 64, 192, 384, 256, 256.
  std::vector<torch::Tensor> forward(const torch::Tensor& x);
  void init_random(uint64_t seed);

 private:
  torch::nn::Sequential features_{nullptr};
  std::array<torch::nn::Conv2d, 5> convs_{nullptr, nullptr, nullptr, nullptr, nullptr};
};
TORCH_MODULE(AlexNetFeatures);

}  // namespace asd
