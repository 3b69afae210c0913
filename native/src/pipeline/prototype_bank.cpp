#include "pipeline/prototype_bank.h"

#include <algorithm>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

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

torch::Tensor local_min_squared_distance(const torch::Tensor& queries, const torch::Tensor& bank_maps, int64_t radius, int64_t max_chunk_bytes) {
  require(queries.dim() == 4 && bank_maps.dim() == 4, "local_min_squared_distance: queries and bank maps must be [B,C,H,W] and [M,C,H,W]");
  require(queries.size(1) == bank_maps.size(1) && queries.size(2) == bank_maps.size(2) && queries.size(3) == bank_maps.size(3), [&] {
    std::ostringstream m;
    m << "local_min_squared_distance: queries " << queries.sizes() << " and bank maps " << bank_maps.sizes() << " differ in channels or grid";
    return m.str();
  });
  require(bank_maps.size(0) > 0, "local_min_squared_distance: the bank is empty");
  require(radius >= 0, "local_min_squared_distance: radius must be >= 0");
  require(max_chunk_bytes > 0, "local_min_squared_distance: max_chunk_bytes must be > 0");
  torch::NoGradGuard no_grad;
  const int64_t c = queries.size(1), h = queries.size(2), w = queries.size(3), maps = bank_maps.size(0);
  const int64_t r = std::min(radius, std::max(h, w) - 1);  // larger radii search the same cells
  // Centred on the bank mean, as min_squared_distance (float32 cancellation).
  const torch::Tensor b_raw = bank_maps.to(torch::kFloat32);
  const torch::Tensor mean = b_raw.mean({0, 2, 3}, /*keepdim=*/true);                       // [1,C,1,1]
  const torch::Tensor b = (b_raw - mean).permute({2, 3, 1, 0});                                // [H,W,C,M]
  // Zero features and +inf norms around the grid: a cell outside it is never the minimum, so no offset needs a mask.
  const torch::Tensor b_pad = torch::zeros({h + 2 * r, w + 2 * r, c, maps}, b.options());
  b_pad.narrow(0, r, h).narrow(1, r, w).copy_(b);
  const torch::Tensor n_pad = torch::full({h + 2 * r, w + 2 * r, 1, maps}, std::numeric_limits<float>::infinity(), b.options());
  n_pad.narrow(0, r, h).narrow(1, r, w).copy_(b.pow(2).sum(2, /*keepdim=*/true));
  const torch::Tensor q_all = (queries.to(b.device(), torch::kFloat32) - mean).permute({2, 3, 0, 1});  // [H,W,B,C]
  const int64_t batch = queries.size(0), positions = h * w;
  const int64_t per_query = positions * (c + maps) * static_cast<int64_t>(sizeof(float));
  const int64_t chunk = std::max<int64_t>(1, max_chunk_bytes / std::max<int64_t>(1, per_query));
  torch::Tensor out = torch::empty({batch, h, w}, b.options());
  for (int64_t start = 0; start < batch; start += chunk) {
    const int64_t nb = std::min(chunk, batch - start);
    const torch::Tensor q = q_all.narrow(2, start, nb).reshape({positions, nb, c}).contiguous();  // [P,nb,C]
    torch::Tensor best = torch::full({positions, nb}, std::numeric_limits<float>::infinity(), b.options());
    for (int64_t dx = -r; dx <= r; ++dx) {
      // The bank shifted by dx, made contiguous once: every dy below is then a contiguous slice (a view, no copy).
      const torch::Tensor bx = b_pad.narrow(1, r + dx, w).contiguous();  // [H+2r, W, C, M]
      const torch::Tensor nx = n_pad.narrow(1, r + dx, w).contiguous();  // [H+2r, W, 1, M]
      for (int64_t dy = -r; dy <= r; ++dy) {
        // Bank cell (y + dy, x + dx) for every test cell (y, x): one [nb,C] x [C,M] product per position.
        const torch::Tensor bs = bx.narrow(0, r + dy, h).view({positions, c, maps});
        const torch::Tensor ns = nx.narrow(0, r + dy, h).view({positions, 1, maps});
        best = torch::minimum(best, torch::baddbmm(ns, q, bs, /*beta=*/1, /*alpha=*/-2).amin(2));
      }
    }
    out.narrow(0, start, nb).copy_((best + q.pow(2).sum(2)).t().reshape({nb, h, w}));
  }
  return out.clamp_min_(0);
}

void BankViews::validate(const std::string& what) const {
  require(!rotations_deg.empty(), what + ": no rotation (use {0} for the identity view)");
  for (int64_t a : rotations_deg) require(a % 90 == 0, what + ": rotation " + std::to_string(a) + " degrees is not a multiple of 90");
}

std::vector<torch::Tensor> BankViews::apply(const torch::Tensor& rgb01) const {
  std::vector<torch::Tensor> out;
  for (int flip = 0; flip < (horizontal_flip ? 2 : 1); ++flip) {
    const torch::Tensor base = flip ? rgb01.flip({3}) : rgb01;
    for (int64_t angle : rotations_deg) {
      const int64_t k = ((angle / 90) % 4 + 4) % 4;
      out.push_back(k == 0 ? base : torch::rot90(base, k, {2, 3}));
    }
  }
  return out;
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
  options_.views().validate("PrototypeBank");
}

void PrototypeBank::append(const std::string& category, const torch::Tensor& rows, const BankViews& views, int64_t maps, int64_t h, int64_t w) {
  require(!category.empty() && category != "__metadata__", "PrototypeBank: invalid category name '" + category + "'");
  torch::Tensor r = rows.detach().to(device_, torch::kFloat32).contiguous();
  auto it = banks_.find(category);
  if (it == banks_.end()) {
    banks_.emplace(category, r);
    layouts_[category] = CategoryLayout{views, maps, h, w};
  } else {
    it->second = torch::cat({it->second, r}, 0);
    CategoryLayout& l = layouts_[category];
    l.maps += maps;
    if (l.grid_h != h || l.grid_w != w) l.grid_h = l.grid_w = -1;  // mixed grids: position-aware matching is refused
  }
}

void PrototypeBank::add_features(const std::string& category, const torch::Tensor& features) {
  require(features.dim() == 4 && features.size(1) == channels_, "PrototypeBank::add_features: expected [B," + std::to_string(channels_) +
                                                                    ",H',W'], got " + std::to_string(features.dim()) + "-D input");
  const auto it = layouts_.find(category);
  append(category, features.permute({0, 2, 3, 1}).reshape({-1, channels_}), it == layouts_.end() ? BankViews{{0}, false} : it->second.views,
         features.size(0), features.size(2), features.size(3));
}

void PrototypeBank::add_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract) {
  add_images(category, rgb01, extract, options_.views());
}

void PrototypeBank::add_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract, const BankViews& views) {
  const auto existing = layouts_.find(category);
  require(existing == layouts_.end() || existing->second.views == views,
          "PrototypeBank::add_images: category '" + category + "' was made with other views; remove it first");
  const ViewRows v = view_rows(rgb01, extract, views);
  append(category, v.rows, views, v.maps, v.h, v.w);
}

void PrototypeBank::replace_images(const std::string& category, const torch::Tensor& rgb01, const PrototypeExtractor& extract, const BankViews& views) {
  const ViewRows v = view_rows(rgb01, extract, views);  // first: a failure leaves the category as it was
  remove(category);
  append(category, v.rows, views, v.maps, v.h, v.w);
}

PrototypeBank::ViewRows PrototypeBank::view_rows(const torch::Tensor& rgb01, const PrototypeExtractor& extract, const BankViews& views) const {
  require(rgb01.dim() == 4 && rgb01.size(1) == 3, "PrototypeBank::add_images: expected images [K,3,H,W]");
  views.validate("PrototypeBank::add_images");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  int64_t h = -1, w = -1;
  for (const torch::Tensor& img : views.apply(rgb01)) {
    const torch::Tensor f = extract(img);
    require(f.dim() == 4 && f.size(0) == rgb01.size(0) && f.size(1) == channels_,
            "PrototypeBank::add_images: the extractor must return [K," + std::to_string(channels_) + ",H',W']");
    if (parts.empty()) {
      h = f.size(2);
      w = f.size(3);
    } else if (f.size(2) != h || f.size(3) != w) {
      h = w = -1;  // a 90-degree view of a non-square image: grids differ
    }
    parts.push_back(f.permute({0, 2, 3, 1}).reshape({-1, channels_}).to(device_, torch::kFloat32));
  }
  return ViewRows{torch::cat(parts, 0), rgb01.size(0) * views.count(), h, w};
}

void PrototypeBank::remove(const std::string& category) {
  banks_.erase(category);
  layouts_.erase(category);
}

const torch::Tensor& PrototypeBank::prototypes(const std::string& category) const {
  auto it = banks_.find(category);
  if (it == banks_.end()) throw_error(ASD_ERR_NOT_FOUND, "prototype bank has no category '" + category + "'");
  return it->second;
}

const CategoryLayout& PrototypeBank::layout(const std::string& category) const {
  auto it = layouts_.find(category);
  if (it == layouts_.end()) throw_error(ASD_ERR_NOT_FOUND, "prototype bank has no category '" + category + "'");
  return it->second;
}

std::vector<std::string> PrototypeBank::categories() const {
  std::vector<std::string> out;
  for (const auto& kv : banks_) out.push_back(kv.first);
  return out;
}

torch::Tensor PrototypeBank::error_map(const std::string& category, const torch::Tensor& features, int64_t matching_radius) const {
  const torch::Tensor& bank = prototypes(category);
  const bool single = features.dim() == 3;
  require(single || features.dim() == 4, "PrototypeBank::error_map: expected [C,H',W'] or [B,C,H',W']");
  const torch::Tensor f = single ? features.unsqueeze(0) : features;
  require(f.size(1) == channels_, "PrototypeBank::error_map: features have " + std::to_string(f.size(1)) + " channels, the bank has " +
                                      std::to_string(channels_));
  const int64_t b = f.size(0), h = f.size(2), w = f.size(3);
  if (matching_radius >= 0) {
    const CategoryLayout& l = layout(category);
    const bool known = l.grid_h >= 0;
    require(known ? l.grid_h == h && l.grid_w == w : bank.size(0) % (h * w) == 0, [&] {
      return "position-aware matching: the bank of '" + category + "' has " +
             (known ? "maps of " + std::to_string(l.grid_h) + "x" + std::to_string(l.grid_w) : std::to_string(bank.size(0)) + " rows, not whole maps of") +
             " the test grid " + std::to_string(h) + "x" + std::to_string(w) + " (build the bank at the analysis size)";
    });
    const torch::Tensor maps = bank.view({-1, h, w, channels_}).permute({0, 3, 1, 2});
    const torch::Tensor e = local_min_squared_distance(f, maps, matching_radius, options_.max_chunk_bytes);
    return single ? e.squeeze(0) : e;
  }
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
  nlohmann::json layout = nlohmann::json::object();
  for (const auto& kv : banks_) {
    map.set(kv.first, kv.second);
    const CategoryLayout& l = layouts_.at(kv.first);
    layout[kv.first] = {{"rotations_deg", l.views.rotations_deg}, {"horizontal_flip", l.views.horizontal_flip}, {"maps", l.maps},
                        {"grid", l.grid_h < 0 ? nlohmann::json(nullptr) : nlohmann::json::array({l.grid_h, l.grid_w})}};
  }
  safetensors::save(path, map,
                    {{"format", "anomalysd.prototype_bank"},
                     {"backbone", backbone_},
                     {"feature_dims", join(feature_dims_)},
                     {"channels", std::to_string(channels_)},
                     {"rotations_deg", join(options_.rotations_deg)},
                     {"horizontal_flip", options_.horizontal_flip ? "1" : "0"},
                     {"aggregation", std::to_string(options_.aggregation)},
                     {"layout", layout.dump()}});
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
  auto flip = header.metadata.find("horizontal_flip");  // absent in banks written before flipped views existed
  options.horizontal_flip = flip != header.metadata.end() && flip->second == "1";
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
    bank.layouts_[map.names()[i]] = CategoryLayout{options.views(), -1, -1, -1};
  }
  auto layout = header.metadata.find("layout");  // absent in banks written before layouts were recorded
  if (layout != header.metadata.end()) {
    try {
      const nlohmann::json layouts = nlohmann::json::parse(layout->second);  // named: items() refers to it
      for (const auto& [category, l] : layouts.items()) {
        auto it = bank.layouts_.find(category);
        if (it == bank.layouts_.end()) throw_error(ASD_ERR_FORMAT, "'" + path + "': metadata 'layout' names category '" + category + "' without rows");
        CategoryLayout c{BankViews{l.at("rotations_deg").get<std::vector<int64_t>>(), l.at("horizontal_flip").get<bool>()}, l.at("maps").get<int64_t>(), -1, -1};
        c.views.validate("'" + path + "': metadata 'layout' of '" + category + "'");
        if (!l.at("grid").is_null()) {
          c.grid_h = l.at("grid").at(0).get<int64_t>();
          c.grid_w = l.at("grid").at(1).get<int64_t>();
          if (c.grid_h <= 0 || c.grid_w <= 0 || c.maps * c.grid_h * c.grid_w != bank.banks_.at(category).size(0)) {
            throw_error(ASD_ERR_FORMAT, "'" + path + "': metadata 'layout' of '" + category + "' (" + std::to_string(c.maps) + " maps of " +
                                            std::to_string(c.grid_h) + "x" + std::to_string(c.grid_w) + ") disagrees with its " +
                                            std::to_string(bank.banks_.at(category).size(0)) + " rows");
          }
        }
        it->second = c;
      }
    } catch (const nlohmann::json::exception& e) {
      throw_error(ASD_ERR_FORMAT, "'" + path + "': metadata 'layout' is not valid: " + e.what());
    }
  }
  return bank;
}

}  // namespace asd
