#include "pipeline/prototype_bank.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"

namespace asd {

namespace F = torch::nn::functional;

torch::Tensor prototype_features(const torch::Tensor& layer2_in, const torch::Tensor& layer3_in, int64_t aggregation) {
  require(layer2_in.dim() == 4 && layer3_in.dim() == 4 && layer2_in.size(0) == layer3_in.size(0),
          "prototype_features: layer2 and layer3 must be [B,C,H,W] with the same batch size");
  require(aggregation >= 1 && aggregation % 2 == 1, [&] { return "prototype_features: aggregation must be odd and >= 1, got " + std::to_string(aggregation); });
  auto aggregate = [aggregation](const torch::Tensor& f) {
    if (aggregation == 1) return f;
    return F::avg_pool2d(f, F::AvgPool2dFuncOptions(aggregation).stride(1).padding(aggregation / 2).count_include_pad(true));
  };
  const torch::Tensor layer2 = aggregate(layer2_in), layer3 = aggregate(layer3_in);
  const torch::Tensor up = F::interpolate(layer3, F::InterpolateFuncOptions()
                                                      .size(std::vector<int64_t>{layer2.size(2), layer2.size(3)})
                                                      .mode(torch::kBilinear)
                                                      .align_corners(false));
  return torch::cat({layer2, up.to(layer2.scalar_type())}, 1);
}

torch::Tensor prototype_features(ResNet18Impl& net, const torch::Tensor& rgb01, int64_t aggregation) {
  torch::NoGradGuard no_grad;
  const torch::Device device = net.parameters().front().device();
  const ResNetFeatures f = net.features_from_rgb01(rgb01.to(device, torch::kFloat32), /*last_stage=*/3);
  return prototype_features(f.layer2, f.layer3, aggregation);
}

int64_t chunk_rows_for(int64_t bank_rows, int64_t max_bytes) {
  const int64_t per_row = std::max<int64_t>(1, bank_rows) * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, max_bytes / per_row);
}

torch::Tensor min_squared_distance(const torch::Tensor& queries, const torch::Tensor& bank, int64_t chunk_rows) {
  require(queries.dim() == 2 && bank.dim() == 2, "min_squared_distance: queries and bank must be 2-D [rows, C]");
  require(queries.size(1) == bank.size(1), "min_squared_distance: queries have " + std::to_string(queries.size(1)) + " channels, bank has " +
                                               std::to_string(bank.size(1)));
  require(bank.size(0) > 0, "min_squared_distance: the bank is empty");
  require(chunk_rows >= 1, "min_squared_distance: chunk_rows must be >= 1");
  torch::NoGradGuard no_grad;
  // Distances are translation invariant: centring both sets on the bank mean shrinks the norms (ReLU
  // features have a large common positive component) and with them the float32 cancellation error of
  // ||q||^2 - 2 q.b + ||b||^2.
  const torch::Tensor b_raw = bank.to(torch::kFloat32);
  const torch::Tensor mean = b_raw.mean(0, /*keepdim=*/true);
  const torch::Tensor b = (b_raw - mean).contiguous();
  const torch::Tensor q = (queries.to(b.device(), torch::kFloat32) - mean).contiguous();
  const torch::Tensor b_norm = b.pow(2).sum(1).unsqueeze(0);  // [1, N]
  const torch::Tensor bt = b.t();                             // [C, N] view
  const int64_t rows = q.size(0);
  torch::Tensor out = torch::empty({rows}, q.options());
  for (int64_t start = 0; start < rows; start += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - start);
    const torch::Tensor qc = q.narrow(0, start, n);
    // The only [n, N] temporary: ||b||^2 - 2 q.b (addmm writes into one fresh buffer).
    const torch::Tensor block = torch::addmm(b_norm, qc, bt, /*beta=*/1, /*alpha=*/-2);
    out.narrow(0, start, n).copy_(torch::amin(block, 1) + qc.pow(2).sum(1));
  }
  return out.clamp_min_(0);
}

PrototypeBank::PrototypeBank(std::string backbone, std::vector<int64_t> feature_dims, PrototypeBankOptions options, torch::Device device)
    : backbone_(std::move(backbone)), feature_dims_(std::move(feature_dims)), options_(std::move(options)), device_(device) {
  require(!feature_dims_.empty(), "PrototypeBank: feature_dims is empty");
  for (int64_t d : feature_dims_) {
    require(d > 0, "PrototypeBank: feature dims must be positive");
    channels_ += d;
  }
  require(options_.max_chunk_bytes > 0, "PrototypeBank: max_chunk_bytes must be positive");
  require(options_.aggregation >= 1 && options_.aggregation % 2 == 1, "PrototypeBank: aggregation must be odd and >= 1");
  require(!options_.rotations_deg.empty(), "PrototypeBank: rotations_deg is empty (use {0} for no augmentation)");
  for (int64_t a : options_.rotations_deg) {
    require(a % 90 == 0, "PrototypeBank: rotation " + std::to_string(a) + " degrees is not a multiple of 90");
  }
}

void PrototypeBank::append(const std::string& category, const torch::Tensor& rows) {
  require(!category.empty() && category != "__metadata__", "PrototypeBank: invalid category name '" + category + "'");
  torch::Tensor r = rows.detach().to(device_, torch::kFloat32).contiguous();
  auto it = banks_.find(category);
  if (it == banks_.end()) {
    banks_.emplace(category, r);
  } else {
    it->second = torch::cat({it->second, r}, 0);
  }
}

void PrototypeBank::add_features(const std::string& category, const torch::Tensor& features) {
  require(features.dim() == 4 && features.size(1) == channels_, "PrototypeBank::add_features: expected [B," + std::to_string(channels_) +
                                                                    ",H',W'], got " + std::to_string(features.dim()) + "-D input");
  append(category, features.permute({0, 2, 3, 1}).reshape({-1, channels_}));
}

void PrototypeBank::add_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract) {
  require(rgb01.dim() == 4 && rgb01.size(1) == 3, "PrototypeBank::add_images: expected images [K,3,H,W]");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t angle : options_.rotations_deg) {
    const int64_t k = ((angle / 90) % 4 + 4) % 4;
    const torch::Tensor img = k == 0 ? rgb01 : torch::rot90(rgb01, k, {2, 3});
    const torch::Tensor f = extract(img);
    require(f.dim() == 4 && f.size(0) == rgb01.size(0) && f.size(1) == channels_,
            "PrototypeBank::add_images: the extractor must return [K," + std::to_string(channels_) + ",H',W']");
    parts.push_back(f.permute({0, 2, 3, 1}).reshape({-1, channels_}).to(device_, torch::kFloat32));
  }
  append(category, torch::cat(parts, 0));
}

const torch::Tensor& PrototypeBank::prototypes(const std::string& category) const {
  auto it = banks_.find(category);
  if (it == banks_.end()) throw_error(ASD_ERR_NOT_FOUND, "prototype bank has no category '" + category + "'");
  return it->second;
}

std::vector<std::string> PrototypeBank::categories() const {
  std::vector<std::string> out;
  for (const auto& kv : banks_) out.push_back(kv.first);
  return out;
}

torch::Tensor PrototypeBank::error_map(const std::string& category, const torch::Tensor& features) const {
  const torch::Tensor& bank = prototypes(category);
  const bool single = features.dim() == 3;
  require(single || features.dim() == 4, "PrototypeBank::error_map: expected [C,H',W'] or [B,C,H',W']");
  const torch::Tensor f = single ? features.unsqueeze(0) : features;
  require(f.size(1) == channels_, "PrototypeBank::error_map: features have " + std::to_string(f.size(1)) + " channels, the bank has " +
                                      std::to_string(channels_));
  const int64_t b = f.size(0), h = f.size(2), w = f.size(3);
  const torch::Tensor q = f.permute({0, 2, 3, 1}).reshape({-1, channels_});
  const torch::Tensor e = min_squared_distance(q, bank, chunk_rows_for(bank.size(0), options_.max_chunk_bytes)).view({b, h, w});
  return single ? e.squeeze(0) : e;
}

void PrototypeBank::to(const torch::Device& device) {
  device_ = device;
  for (auto& kv : banks_) kv.second = kv.second.to(device);
}

namespace {
std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}
std::vector<int64_t> split_ints(const std::string& s, const std::string& key, const std::string& source) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw_error(ASD_ERR_FORMAT, "'" + source + "': metadata '" + key + "' is not a list of integers: '" + s + "'");
    }
  }
  return out;
}
}  // namespace

void PrototypeBank::save(const std::string& path) const {
  TensorMap map;
  for (const auto& kv : banks_) map.set(kv.first, kv.second);
  safetensors::save(path, map,
                    {{"format", "anomalysd.prototype_bank"},
                     {"backbone", backbone_},
                     {"feature_dims", join(feature_dims_)},
                     {"channels", std::to_string(channels_)},
                     {"rotations_deg", join(options_.rotations_deg)},
                     {"aggregation", std::to_string(options_.aggregation)}});
}

PrototypeBank PrototypeBank::load(const std::string& path, torch::Device device, PrototypeBankOptions options) {
  const auto header = safetensors::read_header(path);
  auto meta = [&](const std::string& key) -> const std::string& {
    auto it = header.metadata.find(key);
    if (it == header.metadata.end()) throw_error(ASD_ERR_FORMAT, "'" + path + "': not a prototype bank (metadata '" + key + "' missing)");
    return it->second;
  };
  options.rotations_deg = split_ints(meta("rotations_deg"), "rotations_deg", path);
  auto aggregation = header.metadata.find("aggregation");  // absent in banks written before local aggregation existed
  options.aggregation = aggregation == header.metadata.end() ? 1 : split_ints(aggregation->second, "aggregation", path).at(0);
  PrototypeBank bank(meta("backbone"), split_ints(meta("feature_dims"), "feature_dims", path), options, device);
  if (std::to_string(bank.channels()) != meta("channels")) {
    throw_error(ASD_ERR_FORMAT, "'" + path + "': metadata channels " + meta("channels") + " != sum of feature_dims " + std::to_string(bank.channels()));
  }
  const TensorMap map = safetensors::load(path);
  for (size_t i = 0; i < map.size(); ++i) {
    const torch::Tensor& t = map.tensor(i);
    if (t.dim() != 2 || t.size(1) != bank.channels() || t.scalar_type() != torch::kFloat32) {
      throw_error(ASD_ERR_FORMAT, "'" + path + "': category '" + map.names()[i] + "' is not a float32 [N," + std::to_string(bank.channels()) + "] tensor");
    }
    bank.banks_[map.names()[i]] = t.to(device);
  }
  return bank;
}

}  // namespace asd
