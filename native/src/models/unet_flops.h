// FLOPs of one UNet forward, counted from the architecture (for the benchmark's achieved-GFLOP/s figure).
#pragma once

#include <cstdint>

#include "models/unet_2d_condition.h"

namespace asd::models {

/// Floating-point operations of one UNet2DConditionModel forward of ONE sample at latent size h x w with a prompt
/// context of `context_length` tokens, counting the GEMM-class work only, 2 FLOPs per multiply-add:
///   convolution k x k, Cin -> Cout, output Ho x Wo:  2 · k² · Cin · Cout · Ho · Wo
///   linear Din -> Dout on N tokens:                 2 · N · Din · Dout
///   attention over N queries, M keys, width C:        2 · N · M · C (Q·Kᵀ) + 2 · N · M · C (softmax · V)
/// for conv_in/conv_out, every ResnetBlock2D (conv1, conv2, 1x1 shortcut, time projection), Transformer2DModel
/// (proj_in/out; attn1: q, k, v, out; attn2: q, out, k and v of the context; GEGLU feed-forward C -> 8C, 4C -> C),
/// Downsample2D/Upsample2D convolutions and the time embedding MLP. Norms, activations, softmax and additions are not
/// counted (a few percent at most). Spatial sizes follow the forward: stride-2 convs give ceil(h / 2).
int64_t unet_forward_flops(const UNet2DConditionConfig& config, int64_t latent_height, int64_t latent_width, int64_t context_length = 77);

}  // namespace asd::models
