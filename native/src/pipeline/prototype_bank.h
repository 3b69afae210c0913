// Prototype features, the per-category normal prototype bank and the error map of the prototype-guided
// mask strategy (paper section 4.2, eq. 12-14).
//
//   psi(x)  = [phi2(x) ; Upsample(phi3(x))]                       eq. 12 (bilinear, align_corners=false)
//   P_c     = { [psi(Aug(x))]_{h,w} : h, w, x in X_c }             eq. 13 (Aug = views: rotations, default 0/90/180/270,
//                                                                    optionally each of the horizontally flipped image)
//   E_{h,w} = min_{f in P_c} || [psi(x)]_{h,w} - f ||^2            eq. 14 (global nearest neighbour), or, position-aware,
//             min over the prototypes of each view's map within r grid cells (Chebyshev) of (h, w)
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

/// Nearest neighbour of each test patch among the bank patches within `radius` grid cells (Chebyshev distance) of its own
/// position, in each bank map's own frame: queries [B,C,H,W], bank_maps [M,C,H,W] (M maps of the same grid, e.g. shots x views)
/// -> [B,H,W] float32, min over m and |dy|, |dx| <= radius of ||q[b,:,y,x] - bank[m,:,y+dy,x+dx]||^2 (cells outside the grid are
/// skipped). Same centring on the bank mean and float32 bound as min_squared_distance; one batched GEMM over positions per
/// offset ((2r+1)^2 of them), the bank zero-padded by r with +inf norms so that no offset needs a mask, and copied once per
/// column offset. Peak extra memory about 2 (H+2r)(W+2r)(C+1)M + H*W*B_c*(C+M) floats, with B_c queries per chunk chosen so that
/// H*W*B_c*(C+M)*4 <= max_chunk_bytes.
/// radius >= max(H, W) - 1 searches every position: the global nearest neighbour over the M maps.
/// ASD_ERR_INVALID_ARGUMENT on shape mismatches, an empty bank or radius < 0.
torch::Tensor local_min_squared_distance(const torch::Tensor& queries, const torch::Tensor& bank_maps, int64_t radius,
                                         int64_t max_chunk_bytes = kDefaultMaxChunkBytes);

/// Aug(.) of eq. 13: the views every shot is added under.
struct BankViews {
  /// Rotation angles in degrees, each a multiple of 90 (torch::rot90 over H, W, counter-clockwise).
  std::vector<int64_t> rotations_deg{0, 90, 180, 270};
  /// Also each rotation of the horizontally flipped image (W reversed, then rotated): with the four rotations, the 8 views of
  /// the dihedral group D4.
  bool horizontal_flip = false;

  int64_t count() const { return static_cast<int64_t>(rotations_deg.size()) * (horizontal_flip ? 2 : 1); }
  bool operator==(const BankViews& o) const { return rotations_deg == o.rotations_deg && horizontal_flip == o.horizontal_flip; }
  bool operator!=(const BankViews& o) const { return !(*this == o); }
  /// ASD_ERR_INVALID_ARGUMENT (naming `what`) for no angle or an angle that is not a multiple of 90.
  void validate(const std::string& what) const;
  /// The views of `rgb01` [K,3,H,W] in the order the bank stores them: for flip in {no, yes (if asked)}, for angle in rotations.
  std::vector<torch::Tensor> apply(const torch::Tensor& rgb01) const;
};

/// How one category's rows were made: its views and, when every map had the same grid, that grid and the number of maps
/// (rows = maps x grid_h x grid_w, map-major, each map row-major over (h, w)). grid_h = -1: unknown (a bank file written before
/// layouts were recorded) or mixed.
struct CategoryLayout {
  BankViews views;
  int64_t maps = 0;
  int64_t grid_h = -1, grid_w = -1;
};

struct PrototypeBankOptions {
  /// Aug(.) of eq. 13: rotation angles in degrees, each a multiple of 90 (torch::rot90 over H, W, counter-
  /// clockwise). Every image added with add_images contributes one feature map per angle.
  std::vector<int64_t> rotations_deg{0, 90, 180, 270};
  /// Bound on the temporary distance block of error_map (see min_squared_distance).
  int64_t max_chunk_bytes = kDefaultMaxChunkBytes;
  /// PatchCore's local aggregation size the bank's features were made with (prototype_features); test features
  /// must use the same. Saved with the bank (files without it: 1).
  int64_t aggregation = 1;
  /// With rotations_deg, the default views of add_images (BankViews::horizontal_flip). Saved with the bank (files without it: false).
  bool horizontal_flip = false;

  BankViews views() const { return BankViews{rotations_deg, horizontal_flip}; }
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

  /// Adds the K shots `rgb01` [K,3,H,W] of `category`, each under every view of options().views() (or of `views`):
  /// K * views * H' * W' rows (H', W' of the view's feature map). Runs `extract` without grad. Appending to a category
  /// made with other views is refused (remove it first).
  /// ASD_ERR_INVALID_ARGUMENT if an angle is not a multiple of 90 or the features are not [K,C,H',W'].
  void add_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract);
  void add_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract, const BankViews& views);
  /// Replaces `category` by the shots under `views` (built first: a failure leaves it as it was).
  void replace_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract, const BankViews& views);
  /// Adds the positions of already computed features [B,C,H',W'] (no augmentation; a new category records the identity view).
  void add_features(const std::string& category, const torch::Tensor& features);
  /// Drops `category` (nothing if absent).
  void remove(const std::string& category);

  /// E of eq. 14 for test features psi(x): [C,H',W'] -> [H',W'], or [B,C,H',W'] -> [B,H',W'], float32 on the
  /// bank's device, >= 0, in squared feature units. `matching_radius` < 0: the global nearest neighbour (eq. 14); r >= 0:
  /// position-aware (local_min_squared_distance), which needs the category's maps on the test grid H'xW' (its recorded grid,
  /// or for a bank file without one, a row count that is a multiple of H'W'). ASD_ERR_NOT_FOUND for an unknown category,
  /// ASD_ERR_INVALID_ARGUMENT for a channel or grid mismatch.
  torch::Tensor error_map(const std::string& category, const torch::Tensor& features, int64_t matching_radius = -1) const;

  bool has(const std::string& category) const { return banks_.count(category) != 0; }
  std::vector<std::string> categories() const;
  /// P_c as [N_c, C]; ASD_ERR_NOT_FOUND for an unknown category.
  const torch::Tensor& prototypes(const std::string& category) const;
  /// How the rows of `category` were made; ASD_ERR_NOT_FOUND for an unknown category.
  const CategoryLayout& layout(const std::string& category) const;

  const std::string& backbone() const { return backbone_; }
  const std::vector<int64_t>& feature_dims() const { return feature_dims_; }
  int64_t channels() const { return channels_; }
  const PrototypeBankOptions& options() const { return options_; }
  torch::Device device() const { return device_; }
  void to(const torch::Device& device);

  /// One safetensors tensor per category (key = category name, [N_c, C] float32) and metadata "backbone",
  /// "feature_dims" (comma-separated), "channels", "rotations_deg", "horizontal_flip" (the default views), "aggregation" and
  /// "layout" (JSON: per category its views, maps and grid). Written atomically.
  void save(const std::string& path) const;
  /// Reads a file written by save(). ASD_ERR_FORMAT if the metadata is missing or disagrees with the tensors.
  /// `options.rotations_deg` and `horizontal_flip` are replaced by the file's (they describe how the stored rows were made); a
  /// file without "layout" gives every category those views and an unknown grid.
  static PrototypeBank load(const std::string& path, torch::Device device = torch::kCPU, PrototypeBankOptions options = {});

 private:
  struct ViewRows {
    torch::Tensor rows;
    int64_t maps, h, w;
  };
  /// The rows of the shots under every view, map-major; h = w = -1 when the views' grids differ.
  ViewRows view_rows(const torch::Tensor& rgb01, const PrototypeExtractor& extract, const BankViews& views) const;
  /// Appends rows made of `maps` maps of grid h x w under `views`.
  void append(const std::string& category, const torch::Tensor& rows, const BankViews& views, int64_t maps, int64_t h, int64_t w);

  std::string backbone_;
  std::vector<int64_t> feature_dims_;
  int64_t channels_ = 0;
  PrototypeBankOptions options_;
  torch::Device device_;
  std::map<std::string, torch::Tensor> banks_;
  std::map<std::string, CategoryLayout> layouts_;
};

}  // namespace asd
