#include "models/backbones.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/state_dict.h"

namespace asd {

namespace F = torch::nn::functional;

// ---------------------------------------------------------------------------------------------------------
// ImagePreprocess
// ---------------------------------------------------------------------------------------------------------

ImagePreprocess ImagePreprocess::imagenet_torchvision() {
  ImagePreprocess p;
  p.channel_order = ChannelOrder::rgb;
  p.scale = 1.0;
  p.mean = {0.485, 0.456, 0.406};
  p.std_dev = {0.229, 0.224, 0.225};
  return p;
}

ImagePreprocess ImagePreprocess::onnx_resnet18() {
  ImagePreprocess p;
  p.channel_order = ChannelOrder::bgr;
  p.scale = 255.0;
  p.mean = {103.06, 115.90, 123.15};
  p.std_dev = {1.0, 1.0, 1.0};
  return p;
}

torch::Tensor ImagePreprocess::apply(const torch::Tensor& rgb01) const {
  require(rgb01.dim() == 4 && rgb01.size(1) == 3, "ImagePreprocess::apply: expected [B,3,H,W], got " + std::to_string(rgb01.dim()) + "-D input");
  torch::Tensor x = channel_order == ChannelOrder::bgr ? rgb01.flip({1}) : rgb01;
  const auto opts = torch::TensorOptions().dtype(x.scalar_type()).device(x.device());
  const torch::Tensor m = torch::tensor(std::vector<double>(mean.begin(), mean.end()), torch::kFloat64).to(opts).view({1, 3, 1, 1});
  const torch::Tensor s = torch::tensor(std::vector<double>(std_dev.begin(), std_dev.end()), torch::kFloat64).to(opts).view({1, 3, 1, 1});
  if (mean_image.defined() && mean_image.size(1) == x.size(2) && mean_image.size(2) == x.size(3)) {
    return (x * scale - mean_image.to(opts).unsqueeze(0)) / s;
  }
  return (x * scale - m) / s;
}

namespace {
std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}
std::string join3(const std::array<double, 3>& a) { return fmt_double(a[0]) + "," + fmt_double(a[1]) + "," + fmt_double(a[2]); }

double parse_double(const std::string& s, const std::string& key, const std::string& source) {
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw_error(ASD_ERR_FORMAT, "'" + source + "': metadata '" + key + "' is not a finite number: '" + s + "'");
}

std::array<double, 3> parse3(const std::string& s, const std::string& key, const std::string& source) {
  std::vector<std::string> items;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) items.push_back(item);
  if (items.size() != 3) throw_error(ASD_ERR_FORMAT, "'" + source + "': metadata '" + key + "' needs 3 comma-separated numbers: '" + s + "'");
  return {parse_double(items[0], key, source), parse_double(items[1], key, source), parse_double(items[2], key, source)};
}
}  // namespace

std::map<std::string, std::string> ImagePreprocess::to_metadata() const {
  return {{"preprocess.channel_order", channel_order == ChannelOrder::rgb ? "rgb" : "bgr"},
          {"preprocess.scale", fmt_double(scale)},
          {"preprocess.mean", join3(mean)},
          {"preprocess.std", join3(std_dev)}};
}

ImagePreprocess ImagePreprocess::from_metadata(const std::map<std::string, std::string>& metadata, const ImagePreprocess& fallback,
                                               const std::string& source) {
  bool any = false;
  for (const auto& kv : metadata) any = any || kv.first.rfind("preprocess.", 0) == 0;
  if (!any) return fallback;
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = metadata.find(key);
    if (it == metadata.end()) throw_error(ASD_ERR_FORMAT, "'" + source + "': metadata '" + key + "' is missing");
    return it->second;
  };
  ImagePreprocess p;
  const std::string& order = get("preprocess.channel_order");
  if (order == "rgb") {
    p.channel_order = ChannelOrder::rgb;
  } else if (order == "bgr") {
    p.channel_order = ChannelOrder::bgr;
  } else {
    throw_error(ASD_ERR_FORMAT, "'" + source + "': metadata 'preprocess.channel_order' must be rgb or bgr, got '" + order + "'");
  }
  p.scale = parse_double(get("preprocess.scale"), "preprocess.scale", source);
  p.mean = parse3(get("preprocess.mean"), "preprocess.mean", source);
  p.std_dev = parse3(get("preprocess.std"), "preprocess.std", source);
  for (double s : p.std_dev) {
    if (s == 0.0) throw_error(ASD_ERR_FORMAT, "'" + source + "': metadata 'preprocess.std' has a zero entry");
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------------
// FrozenBatchNorm2d
// ---------------------------------------------------------------------------------------------------------

FrozenBatchNorm2dImpl::FrozenBatchNorm2dImpl(int64_t channels, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
  running_mean = register_buffer("running_mean", torch::zeros({channels}));
  running_var = register_buffer("running_var", torch::ones({channels}));
}

torch::Tensor FrozenBatchNorm2dImpl::forward(const torch::Tensor& x) {
  return F::batch_norm(x, running_mean, running_var, F::BatchNormFuncOptions().weight(weight).bias(bias).training(false).eps(eps));
}

// ---------------------------------------------------------------------------------------------------------
// ResNet18
// ---------------------------------------------------------------------------------------------------------

std::string to_string(ResNetPadding p) { return p == ResNetPadding::torchvision ? "torchvision" : "onnx_export"; }

ResNetPadding resnet_padding_from_string(const std::string& s) {
  if (s == "torchvision") return ResNetPadding::torchvision;
  if (s == "onnx_export") return ResNetPadding::onnx_export;
  throw_error(ASD_ERR_UNSUPPORTED, "ResNet padding mode '" + s + "' is not supported (torchvision | onnx_export)");
}

namespace {

// A conv of size k and stride s; in onnx_export mode a stride-2 conv is created unpadded and padded
// explicitly (asym_pad) before it.
torch::nn::Conv2d make_conv(int64_t in, int64_t out, int64_t k, int64_t stride, ResNetPadding padding) {
  const bool explicit_pad = padding == ResNetPadding::onnx_export && stride == 2;
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(explicit_pad ? 0 : k / 2).bias(false));
}

// The CNTK export's padding for a k x k window at stride 2: top/left (k-1)/2, bottom/right (k-1)/2 - 1
// (7x7: 3 and 2; 3x3: 1 and 0). F::pad's order is (left, right, top, bottom).
torch::Tensor asym_pad(const torch::Tensor& x, int64_t k, double value = 0.0) {
  const int64_t lo = (k - 1) / 2;
  const int64_t hi = lo - 1;
  return F::pad(x, F::PadFuncOptions({lo, hi, lo, hi}).mode(torch::kConstant).value(value));
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride, ResNetPadding padding)
    : padding_(padding), stride_(stride) {
  conv1_ = register_module("conv1", make_conv(in_channels, out_channels, 3, stride, padding));
  bn1_ = register_module("bn1", FrozenBatchNorm2d(out_channels));
  conv2_ = register_module("conv2", make_conv(out_channels, out_channels, 3, 1, padding));
  bn2_ = register_module("bn2", FrozenBatchNorm2d(out_channels));
  if (stride != 1 || in_channels != out_channels) {
    // 1x1 stride-2 conv: no padding in either mode.
    down_conv_ = torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 1).stride(stride).bias(false));
    down_bn_ = FrozenBatchNorm2d(out_channels);
    downsample_ = register_module("downsample", torch::nn::Sequential(down_conv_, down_bn_));
  }
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = (padding_ == ResNetPadding::onnx_export && stride_ == 2) ? asym_pad(x, 3) : x;
  h = torch::relu(bn1_->forward(conv1_->forward(h)));
  h = bn2_->forward(conv2_->forward(h));
  const torch::Tensor identity = downsample_ ? down_bn_->forward(down_conv_->forward(x)) : x;
  return torch::relu(h + identity);
}

ResNet18Impl::ResNet18Impl(ResNetPadding padding, ImagePreprocess preprocess, std::array<int64_t, 4> blocks)
    : padding_(padding), preprocess_(preprocess) {
  conv1_ = register_module("conv1", make_conv(3, 64, 7, 2, padding));
  bn1_ = register_module("bn1", FrozenBatchNorm2d(64));
  auto stage = [&](int64_t in, int64_t out, int64_t stride, int64_t n) {
    require(n >= 1, "ResNet18: every stage needs at least one block");
    torch::nn::Sequential seq(BasicBlock(in, out, stride, padding));
    for (int64_t i = 1; i < n; ++i) seq->push_back(BasicBlock(out, out, 1, padding));
    return seq;
  };
  layer1_ = register_module("layer1", stage(64, 64, 1, blocks[0]));
  layer2_ = register_module("layer2", stage(64, 128, 2, blocks[1]));
  layer3_ = register_module("layer3", stage(128, 256, 2, blocks[2]));
  layer4_ = register_module("layer4", stage(256, 512, 2, blocks[3]));
}

torch::Tensor ResNet18Impl::pooled(const torch::Tensor& x) { return forward(x, 4).layer4.mean({2, 3}); }

ResNetFeatures ResNet18Impl::forward(const torch::Tensor& x, int last_stage) {
  require(last_stage >= 1 && last_stage <= 4, "ResNet18::forward: last_stage must be 1..4, got " + std::to_string(last_stage));
  require(x.dim() == 4 && x.size(1) == 3, "ResNet18::forward: expected [B,3,H,W]");
  if (padding_ == ResNetPadding::onnx_export && last_stage >= 2) {
    const int64_t m = int64_t{1} << (last_stage + 1);
    require(x.size(2) % m == 0 && x.size(3) % m == 0, "ResNet18 (onnx_export padding): height and width must be multiples of " +
                                                          std::to_string(m) + " up to layer" + std::to_string(last_stage) + ", got " +
                                                          std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)));
  }
  torch::Tensor stem, h;
  if (padding_ == ResNetPadding::onnx_export) {
    stem = torch::relu(bn1_->forward(conv1_->forward(asym_pad(x, 7))));
    // Post-ReLU values are >= 0, so -inf and 0 padding agree; -inf is what a max pool's padding means.
    h = F::max_pool2d(asym_pad(stem, 3, -std::numeric_limits<double>::infinity()), F::MaxPool2dFuncOptions(3).stride(2).padding(0));
  } else {
    stem = torch::relu(bn1_->forward(conv1_->forward(x)));
    h = F::max_pool2d(stem, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
  }
  ResNetFeatures out;
  out.stem = stem;
  out.layer1 = layer1_->forward(h);
  if (last_stage >= 2) out.layer2 = layer2_->forward(out.layer1);
  if (last_stage >= 3) out.layer3 = layer3_->forward(out.layer2);
  if (last_stage >= 4) out.layer4 = layer4_->forward(out.layer3);
  return out;
}

ResNetFeatures ResNet18Impl::features_from_rgb01(const torch::Tensor& rgb01, int last_stage) {
  return forward(preprocess_.apply(rgb01), last_stage);
}

namespace {
void init_module_random(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : m.named_parameters(true)) {
    const std::string& name = p.key();
    torch::Tensor t = p.value();
    if (t.dim() == 4) {
      // kaiming normal, fan_in, gain sqrt(2): keeps activations O(1) through the ReLU stack.
      const double fan_in = static_cast<double>(t.size(1) * t.size(2) * t.size(3));
      t.normal_(0.0, std::sqrt(2.0 / fan_in));
    } else if (name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0) {
      t.uniform_(0.5, 1.0);
    } else {
      t.normal_(0.0, 0.05);
    }
  }
  for (auto& b : m.named_buffers(true)) {
    const std::string& name = b.key();
    torch::Tensor t = b.value();
    if (name.find("running_var") != std::string::npos) {
      t.uniform_(0.5, 2.0);
    } else if (name.find("running_mean") != std::string::npos) {
      t.normal_(0.0, 0.1);
    }
  }
}
}  // namespace

void ResNet18Impl::init_random(uint64_t seed) { init_module_random(*this, seed); }

std::map<std::string, std::string> resnet18_metadata(const ResNet18Impl& net) {
  auto md = net.preprocess().to_metadata();
  md["padding"] = to_string(net.padding());
  return md;
}

ResNet18 load_resnet18(const std::string& path, ResNetPadding padding, const ImagePreprocess& preprocess) {
  const auto header = safetensors::read_header(path);
  auto it = header.metadata.find("padding");
  if (it != header.metadata.end()) padding = resnet_padding_from_string(it->second);
  std::array<int64_t, 4> blocks{2, 2, 2, 2};
  if (auto b = header.metadata.find("blocks"); b != header.metadata.end()) {
    std::stringstream ss(b->second);
    std::string item;
    for (int i = 0; i < 4; ++i) {
      if (!std::getline(ss, item, ',')) throw_error(ASD_ERR_FORMAT, "'" + path + "': metadata 'blocks' needs 4 comma-separated counts: '" + b->second + "'");
      blocks[static_cast<size_t>(i)] = std::stoll(item);
    }
  }
  ImagePreprocess pre = ImagePreprocess::from_metadata(header.metadata, preprocess, path);
  const TensorMap weights = safetensors::load(path, torch::kFloat32);
  if (const torch::Tensor* mean = weights.find("preprocess.mean")) pre.mean_image = *mean;
  ResNet18 net(padding, pre, blocks);
  load_state_dict(*net, weights);
  net->eval();
  return net;
}

// ---------------------------------------------------------------------------------------------------------
// AlexNet
// ---------------------------------------------------------------------------------------------------------

AlexNetFeaturesImpl::AlexNetFeaturesImpl() {
  using torch::nn::Conv2d;
  using torch::nn::Conv2dOptions;
  using torch::nn::MaxPool2d;
  using torch::nn::MaxPool2dOptions;
  using torch::nn::ReLU;
  convs_[0] = Conv2d(Conv2dOptions(3, 64, 11).stride(4).padding(2));
  convs_[1] = Conv2d(Conv2dOptions(64, 192, 5).padding(2));
  convs_[2] = Conv2d(Conv2dOptions(192, 384, 3).padding(1));
  convs_[3] = Conv2d(Conv2dOptions(384, 256, 3).padding(1));
  convs_[4] = Conv2d(Conv2dOptions(256, 256, 3).padding(1));
  // Indices as in torchvision: 0 conv, 1 relu, 2 pool, 3 conv, 4 relu, 5 pool, 6 conv, 7 relu, 8 conv,
  // 9 relu, 10 conv, 11 relu (the final pool, index 12, is never used here).
  features_ = register_module("features", torch::nn::Sequential(convs_[0], ReLU(), MaxPool2d(MaxPool2dOptions(3).stride(2)), convs_[1], ReLU(),
                                                                MaxPool2d(MaxPool2dOptions(3).stride(2)), convs_[2], ReLU(), convs_[3], ReLU(),
                                                                convs_[4], ReLU()));
}

std::vector<torch::Tensor> AlexNetFeaturesImpl::forward(const torch::Tensor& x) {
  require(x.dim() == 4 && x.size(1) == 3, "AlexNetFeatures::forward: expected [B,3,H,W]");
  std::vector<torch::Tensor> out;
  out.reserve(5);
  torch::Tensor h = torch::relu(convs_[0]->forward(x));
  out.push_back(h);
  h = torch::relu(convs_[1]->forward(F::max_pool2d(h, F::MaxPool2dFuncOptions(3).stride(2))));
  out.push_back(h);
  h = torch::relu(convs_[2]->forward(F::max_pool2d(h, F::MaxPool2dFuncOptions(3).stride(2))));
  out.push_back(h);
  h = torch::relu(convs_[3]->forward(h));
  out.push_back(h);
  h = torch::relu(convs_[4]->forward(h));
  out.push_back(h);
  return out;
}

void AlexNetFeaturesImpl::init_random(uint64_t seed) { init_module_random(*this, seed); }

}  // namespace asd
