// Prototype features, the per-category normal prototype bank and the error map of the prototype-guided
// mask strategy (paper section 4.2, eq. 12-14).
//
//   psi(x)  = [phi2(x) ; Upsample(phi3(x))]                       eq. 12 (bilinear, align_corners=false)
//   P_c     = { [psi(Aug(x))]_{h,w} : h, w, x in X_c }             eq. 13 (Aug = rotations, default 0/90/180/270)
//   E_{h,w} = min_{f in P_c} || [psi(x)]_{h,w} - f ||^2            eq. 14
//
// The paper uses EfficientNet-B6 for phi; this engine's default offline backbone is ResNet18 (layer2: 128
// channels at stride 8, layer3: 256 at stride 16), so psi has 384 channels at 1/8 of the input size.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "models/backbones.h"

namespace asd {

/// eq. 12 from already computed features: layer2 [B,C2,H',W'] and layer3 [B,C3,h,w] -> [B,C2+C3,H',W']
/// (layer3 upsampled bilinearly, align_corners=false, to H'xW'). `aggregation` k > 1: PatchCore's local
/// aggregation first, each layer averaged over k x k neighbours (avg_pool2d, stride 1, padding k/2, zero padding
/// counted, as torch.nn.AvgPool2d(k, 1, k // 2) in PatchCore/anomalib); k must be odd and >= 1 (1 = off).
/// ASD_ERR_INVALID_ARGUMENT on bad shapes or k.
torch::Tensor prototype_features(const torch::Tensor& layer2, const torch::Tensor& layer3, int64_t aggregation = 1);
/// eq. 12 with a ResNet18: rgb01 [B,3,H,W] float RGB in [0,1] -> [B,384,H/8,W/8] (ceil for torchvision
/// padding; onnx_export padding needs H, W multiples of 16), on the net's device, computed without gradients.
torch::Tensor prototype_features(ResNet18Impl& net, const torch::Tensor& rgb01, int64_t aggregation = 1);

/// Largest default size of the temporary [chunk_rows, bank_rows] float32 distance block: 256 MiB.
constexpr int64_t kDefaultMaxChunkBytes = int64_t{256} << 20;

/// Rows per query chunk so that chunk_rows * bank_rows * 4 bytes <= max_bytes (at least 1 row; with more
/// than max_bytes/4 bank rows a single row exceeds the bound).
int64_t chunk_rows_for(int64_t bank_rows, int64_t max_bytes = kDefaultMaxChunkBytes);

/// For each query row q_i ([M,C]) the minimum over bank rows b_j ([N,C]) of ||q_i - b_j||^2 (eq. 14),
/// computed after centring both on the bank mean m as min_j(||b_j-m||^2 - 2 (q_i-m).(b_j-m)) + ||q_i-m||^2
/// with one float32 matmul per chunk of `chunk_rows` query rows, clamped at 0 (cancellation can give tiny
/// negatives; the absolute error scales with float32 epsilon x (||q_i-m||^2 + ||b_j-m||^2)). Returns [M] float32 on the
/// bank's device. Peak extra memory: chunk_rows * N * 4 bytes (the distance block) + the centred copies
/// (N + M) * C * 4 bytes + O(M + N).
/// ASD_ERR_INVALID_ARGUMENT if the channel counts differ, the bank is empty or chunk_rows < 1.
torch::Tensor min_squared_distance(const torch::Tensor& queries, const torch::Tensor& bank, int64_t chunk_rows);

struct PrototypeBankOptions {
  /// Aug(.) of eq. 13: rotation angles in degrees, each a multiple of 90 (torch::rot90 over H, W, counter-
  /// clockwise). Every image added with add_images contributes one feature map per angle.
  std::vector<int64_t> rotations_deg{0, 90, 180, 270};
  /// Bound on the temporary distance block of error_map (see min_squared_distance).
  int64_t max_chunk_bytes = kDefaultMaxChunkBytes;
  /// PatchCore's local aggregation size the bank's features were made with (prototype_features); test features
  /// must use the same. Saved with the bank (files without it: 1).
  int64_t aggregation = 1;
};

/// Images rgb01 [B,3,H,W] (float RGB in [0,1]) -> psi [B,C,H',W'] (e.g. prototype_features with a ResNet18).
using PrototypeExtractor = std::function<torch::Tensor(const torch::Tensor& rgb01)>;

/// Normal prototype sets P_c (eq. 13), one [N_c, C] float32 tensor per category, on one device.
class PrototypeBank {
 public:
  /// `backbone`: a name recorded in the file (e.g. "resnet18-onnx_export"); `feature_dims`: channels of each
  /// concatenated layer (e.g. {128, 256}); C = their sum.
  PrototypeBank(std::string backbone, std::vector<int64_t> feature_dims, PrototypeBankOptions options = {},
                torch::Device device = torch::kCPU);

  /// Adds the K shots `rgb01` [K,3,H,W] of `category`, each under every rotation of options().rotations_deg:
  /// K * rotations * H' * W' rows (H', W' of the rotated image's feature map). Runs `extract` without grad.
  /// ASD_ERR_INVALID_ARGUMENT if an angle is not a multiple of 90 or the features are not [K,C,H',W'].
  void add_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract);
  /// Adds the positions of already computed features [B,C,H',W'] (no augmentation).
  void add_features(const std::string& category, const torch::Tensor& features);

  /// E of eq. 14 for test features psi(x): [C,H',W'] -> [H',W'], or [B,C,H',W'] -> [B,H',W'], float32 on the
  /// bank's device, >= 0, in squared feature units. ASD_ERR_NOT_FOUND for an unknown category,
  /// ASD_ERR_INVALID_ARGUMENT for a channel mismatch.
  torch::Tensor error_map(const std::string& category, const torch::Tensor& features) const;

  bool has(const std::string& category) const { return banks_.count(category) != 0; }
  std::vector<std::string> categories() const;
  /// P_c as [N_c, C]; ASD_ERR_NOT_FOUND for an unknown category.
  const torch::Tensor& prototypes(const std::string& category) const;

  const std::string& backbone() const { return backbone_; }
  const std::vector<int64_t>& feature_dims() const { return feature_dims_; }
  int64_t channels() const { return channels_; }
  const PrototypeBankOptions& options() const { return options_; }
  torch::Device device() const { return device_; }
  void to(const torch::Device& device);

  /// One safetensors tensor per category (key = category name, [N_c, C] float32) and metadata "backbone",
  /// "feature_dims" (comma-separated), "channels", "rotations_deg". Written atomically.
  void save(const std::string& path) const;
  /// Reads a file written by save(). ASD_ERR_FORMAT if the metadata is missing or disagrees with the tensors.
  /// `options.rotations_deg` is replaced by the file's (it describes how the stored rows were made).
  static PrototypeBank load(const std::string& path, torch::Device device = torch::kCPU, PrototypeBankOptions options = {});

 private:
  void append(const std::string& category, const torch::Tensor& rows);

  std::string backbone_;
  std::vector<int64_t> feature_dims_;
  int64_t channels_ = 0;
  PrototypeBankOptions options_;
  torch::Device device_;
  std::map<std::string, torch::Tensor> banks_;
};

}  // namespace asd
