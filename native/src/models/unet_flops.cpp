#include "models/unet_flops.h"

#include <algorithm>

#include "core/error.h"

namespace asd::models {

namespace {

struct Counter {
  const UNet2DConditionConfig& c;
  int64_t temb;
  int64_t context_length;
  int64_t flops = 0;

  void conv(int64_t k, int64_t cin, int64_t cout, int64_t h, int64_t w) { flops += 2 * k * k * cin * cout * h * w; }
  void linear(int64_t n, int64_t din, int64_t dout) { flops += 2 * n * din * dout; }

  void resnet(int64_t in, int64_t out, int64_t h, int64_t w) {
    conv(3, in, out, h, w);
    linear(1, temb, out);
    conv(3, out, out, h, w);
    if (in != out) conv(1, in, out, h, w);
  }

  void transformer(size_t level, int64_t channels, int64_t h, int64_t w) {
    const int64_t n = h * w, cross = c.cross_attention_dim[level];
    linear(n, channels, channels);  // proj_in (a 1x1 conv costs the same)
    for (int64_t layer = 0; layer < c.transformer_layers_per_block[level]; ++layer) {
      linear(n, channels, 3 * channels);  // attn1: q, k, v
      flops += 2 * 2 * n * n * channels;  // Q·Kᵀ and softmax·V over all heads
      linear(n, channels, channels);      // attn1.to_out
      linear(n, channels, channels);      // attn2.to_q
      linear(context_length, cross, 2 * channels);  // attn2.to_k, to_v on the prompt
      flops += 2 * 2 * n * context_length * channels;
      linear(n, channels, channels);      // attn2.to_out
      linear(n, channels, 8 * channels);  // GEGLU proj (hidden and gate)
      linear(n, 4 * channels, channels);  // ff.net.2
    }
    linear(n, channels, channels);  // proj_out
  }
};

bool has_cross_attention(const std::string& block_type) { return block_type.rfind("CrossAttn", 0) == 0; }

}  // namespace

int64_t unet_forward_flops(const UNet2DConditionConfig& c, int64_t latent_height, int64_t latent_width, int64_t context_length) {
  require(latent_height > 0 && latent_width > 0 && context_length > 0, "unet_forward_flops: sizes must be > 0");
  const size_t levels = c.block_out_channels.size();
  const int64_t c0 = c.block_out_channels.front();
  Counter k{c, c.time_embedding_dim > 0 ? c.time_embedding_dim : 4 * c0, context_length};
  k.linear(1, c0, k.temb);  // time embedding MLP
  k.linear(1, k.temb, k.temb);
  int64_t h = latent_height, w = latent_width;
  k.conv(3, c.in_channels, c0, h, w);
  std::vector<std::pair<int64_t, int64_t>> sizes;  // spatial size at each level
  int64_t channels = c0;
  for (size_t level = 0; level < levels; ++level) {
    sizes.emplace_back(h, w);
    const int64_t out = c.block_out_channels[level];
    for (int64_t j = 0; j < c.layers_per_block[level]; ++j) {
      k.resnet(j == 0 ? channels : out, out, h, w);
      if (has_cross_attention(c.down_block_types[level])) k.transformer(level, out, h, w);
    }
    channels = out;
    if (level + 1 < levels) {  // Downsample2D: 3x3 stride 2
      h = (h + 1) / 2;
      w = (w + 1) / 2;
      k.conv(3, out, out, h, w);
    }
  }
  if (!c.mid_block_type.empty()) {
    const size_t last = levels - 1;
    k.resnet(channels, channels, h, w);
    for (int64_t layer = 0; layer < 1; ++layer) {
      k.transformer(last, channels, h, w);
      k.resnet(channels, channels, h, w);
    }
  }
  int64_t prev = c.block_out_channels.back();
  for (size_t u = 0; u < levels; ++u) {
    const size_t level = levels - 1 - u;
    const int64_t out = c.block_out_channels[level];
    const int64_t input = c.block_out_channels[level == 0 ? 0 : level - 1];
    std::tie(h, w) = sizes[level];
    const int64_t layers = c.layers_per_block[level] + 1;
    for (int64_t i = 0; i < layers; ++i) {
      const int64_t skip = i == layers - 1 ? input : out;
      k.resnet((i == 0 ? prev : out) + skip, out, h, w);
      if (has_cross_attention(c.up_block_types[u])) k.transformer(level, out, h, w);
    }
    if (level > 0) k.conv(3, out, out, sizes[level - 1].first, sizes[level - 1].second);  // Upsample2D to the next skip size
    prev = out;
  }
  k.conv(3, c0, c.out_channels, latent_height, latent_width);
  return k.flops;
}

}  // namespace asd::models
