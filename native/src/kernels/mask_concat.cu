// CUDA path of kernels/mask_concat.h: one launch writes all (or only the z_t) channels of the UNet input.
#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/mask_concat.h"

namespace asd::kernels {

namespace {

template <typename T>
__global__ void mask_concat_kernel(const T* __restrict__ z, const T* __restrict__ ml, const T* __restrict__ m, T* __restrict__ out,
                                   int64_t B, int64_t C, int64_t hw, bool ml_batched, bool m_batched, bool latents_only) {
  const int64_t channels_out = latents_only ? C : 2 * C + 1;
  const int64_t total = B * channels_out * hw;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t p = i % hw;
    const int64_t c = (i / hw) % channels_out;
    const int64_t b = i / (hw * channels_out);
    T v;
    if (c < C) {
      v = z[(b * C + c) * hw + p];
    } else if (c < 2 * C) {
      v = ml[((ml_batched ? b : 0) * C + (c - C)) * hw + p];
    } else {
      v = m[(m_batched ? b : 0) * hw + p];
    }
    out[(b * (2 * C + 1) + c) * hw + p] = v;
  }
}

}  // namespace

void mask_concat_cuda(const torch::Tensor& z_t, const torch::Tensor& masked_latents, const torch::Tensor& mask,
                      torch::Tensor& out, bool latents_only) {
  const c10::cuda::CUDAGuard device_guard(z_t.device());
  const int64_t B = z_t.size(0), C = z_t.size(1), hw = z_t.size(2) * z_t.size(3);
  const int64_t total = B * (latents_only ? C : 2 * C + 1) * hw;
  if (total == 0) return;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 65535));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z_t.scalar_type(), "mask_concat_cuda", [&] {
    mask_concat_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        z_t.data_ptr<scalar_t>(), masked_latents.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, hw,
        masked_latents.size(0) == B, mask.size(0) == B, latents_only);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace asd::kernels
