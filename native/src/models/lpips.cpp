#include "models/lpips.h"

#include "core/error.h"
#include "io/state_dict.h"

namespace asd {

namespace F = torch::nn::functional;

std::string to_string(PerceptualDistance d) { return d == PerceptualDistance::lpips_alex ? "lpips_alex" : "resnet18_uniform"; }

PerceptualDistance perceptual_distance_from_string(const std::string& s) {
  if (s == "lpips_alex") return PerceptualDistance::lpips_alex;
  if (s == "resnet18_uniform") return PerceptualDistance::resnet18_uniform;
  throw_error(ASD_ERR_UNSUPPORTED, "perceptual distance '" + s + "' is not supported (lpips_alex | resnet18_uniform)");
}

namespace {
constexpr int64_t kAlexChannels[5] = {64, 192, 384, 256, 256};
constexpr int64_t kResNetChannels[3] = {64, 128, 256};
}  // namespace

Lpips Lpips::alex(const TensorMap& net_weights, const TensorMap& lin_weights) {
  AlexNetFeatures net;
  load_state_dict(*net, net_weights);
  std::vector<torch::Tensor> lin;
  for (int l = 0; l < 5; ++l) lin.push_back(lin_weights.at("lin" + std::to_string(l) + ".model.1.weight"));
  try {
    return alex(net, std::move(lin));
  } catch (const Error& e) {
    throw Error(e.status(), "'" + lin_weights.source() + "': " + e.what());
  }
}

Lpips Lpips::alex(AlexNetFeatures net, std::vector<torch::Tensor> lin_weights) {
  require(lin_weights.size() == 5, "LPIPS AlexNet needs 5 linear weights, got " + std::to_string(lin_weights.size()));
  for (int l = 0; l < 5; ++l) {
    const torch::Tensor& w = lin_weights[l];
    if (!(w.dim() == 4 && w.size(0) == 1 && w.size(1) == kAlexChannels[l] && w.size(2) == 1 && w.size(3) == 1)) {
      throw_error(ASD_ERR_FORMAT, "lin" + std::to_string(l) + ".model.1.weight must be [1," + std::to_string(kAlexChannels[l]) + ",1,1]");
    }
    lin_weights[l] = w.to(torch::kFloat32);
  }
  Lpips m;
  m.kind_ = PerceptualDistance::lpips_alex;
  net->eval();
  m.alex_ = net;
  m.lin_ = std::move(lin_weights);
  m.to(m.alex_->parameters().front().device());
  return m;
}

Lpips Lpips::resnet18_uniform(ResNet18 net) {
  Lpips m;
  m.kind_ = PerceptualDistance::resnet18_uniform;
  net->eval();
  m.resnet_ = net;
  for (int64_t c : kResNetChannels) m.lin_.push_back(torch::full({1, c, 1, 1}, 1.0 / static_cast<double>(c), torch::kFloat32));
  m.to(m.resnet_->parameters().front().device());
  return m;
}

void Lpips::to(const torch::Device& device) {
  device_ = device;
  if (alex_) alex_->to(device);
  if (resnet_) resnet_->to(device);
  for (auto& w : lin_) w = w.to(device);
}

std::vector<torch::Tensor> Lpips::features(const torch::Tensor& x) const {
  if (kind_ == PerceptualDistance::lpips_alex) {
    // LPIPS ScalingLayer: (x - shift) / scale.
    const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(x.device());
    const torch::Tensor shift = torch::tensor({-0.030f, -0.088f, -0.188f}, opts).view({1, 3, 1, 1});
    const torch::Tensor scale = torch::tensor({0.458f, 0.448f, 0.450f}, opts).view({1, 3, 1, 1});
    return alex_->forward((x - shift) / scale);
  }
  const ResNetFeatures f = resnet_->features_from_rgb01((x + 1.0) * 0.5, /*last_stage=*/3);
  return {f.layer1, f.layer2, f.layer3};
}

torch::Tensor Lpips::distance_map(const torch::Tensor& in0, const torch::Tensor& in1) const {
  require(in0.dim() == 4 && in0.size(1) == 3, "LPIPS distance_map: in0 must be [B,3,H,W]");
  require(in0.sizes() == in1.sizes(), "LPIPS distance_map: in0 and in1 must have the same shape");
  std::vector<int64_t> pairs(static_cast<size_t>(in0.size(0)));
  for (size_t i = 0; i < pairs.size(); ++i) pairs[i] = static_cast<int64_t>(i);
  return distance_map(in0, pairs, in1);
}

torch::Tensor Lpips::distance_map(const torch::Tensor& refs, const std::vector<int64_t>& ref_of_item, const torch::Tensor& others) const {
  require(refs.dim() == 4 && refs.size(1) == 3 && others.dim() == 4 && others.size(1) == 3 && refs.size(2) == others.size(2) &&
              refs.size(3) == others.size(3),
          "LPIPS distance_map: refs [U,3,H,W] and others [B,3,H,W] must share H and W");
  require(static_cast<int64_t>(ref_of_item.size()) == others.size(0), "LPIPS distance_map: one reference index per item is needed");
  for (int64_t r : ref_of_item) require(r >= 0 && r < refs.size(0), "LPIPS distance_map: a reference index is out of range");
  const int64_t refs_count = refs.size(0), batch = others.size(0), height = others.size(2), width = others.size(3);
  // One trunk pass over the distinct references and the items.
  const torch::Tensor both = torch::cat({refs.to(device_, torch::kFloat32), others.to(device_, torch::kFloat32)}, 0);
  const std::vector<torch::Tensor> feats = features(both);
  const torch::Tensor index = torch::tensor(ref_of_item, torch::kInt64).to(device_);
  torch::Tensor total;
  for (size_t l = 0; l < feats.size(); ++l) {
    const torch::Tensor n = feats[l] / (feats[l].pow(2).sum(1, /*keepdim=*/true).sqrt() + 1e-10);
    const torch::Tensor diff2 = (n.narrow(0, 0, refs_count).index_select(0, index) - n.narrow(0, refs_count, batch)).pow(2);
    const torch::Tensor d = F::conv2d(diff2, lin_[l]);  // [B,1,h,w] = sum_c w[c] * diff2[c]
    const torch::Tensor up = F::interpolate(
        d, F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).mode(torch::kBilinear).align_corners(false));
    total = total.defined() ? total + up : up;
  }
  return total;
}

}  // namespace asd
