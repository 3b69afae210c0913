// Google Benchmark: the engine's hot paths on the compact preset (CPU) and, with a CUDA device, the SD 2
// inpainting architecture. Printed figures, no assertions: run build/native/native/bench/anomalysd_bench.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <memory>
#include <torch/torch.h>

#ifdef ANOMALYSD_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "pipeline/inpaint.h"
#include "pipeline/sd_pipeline.h"

using namespace asd::pipeline;

namespace {

SdComponents& compact() {
  static SdComponents c = compact_preset(0);
  return c;
}

/// The paper's masks at size x size: the k x k grids for k in {1, 2, 4, 8} (85) + one blob for M^(p).
torch::Tensor paper_masks(int64_t size) {
  auto masks = torch::zeros({86, 1, size, size});
  int64_t i = 0;
  for (int64_t k : {1, 2, 4, 8}) {
    for (int64_t r = 0; r < k; ++r)
      for (int64_t q = 0; q < k; ++q, ++i) masks[i].narrow(1, r * size / k, size / k).narrow(2, q * size / k, size / k).fill_(1);
  }
  masks[85].narrow(1, size * 5 / 16, size / 4).narrow(2, size * 7 / 16, size / 4).fill_(1);
  return masks;
}

void BM_CompactUNetStep(benchmark::State& state) {
  torch::NoGradGuard ng;
  auto& c = compact();
  const int64_t batch = state.range(0), latent = state.range(1);
  const bool shared = state.range(2) == 1;  // one prompt embedding [1,77,64] for the whole batch, as in inpainting
  const auto x = torch::randn({batch, 9, latent, latent});
  const auto ctx = torch::randn({shared ? 1 : batch, 77, 64});
  const auto t = torch::tensor({500}, torch::kInt64);
  for (auto _ : state) benchmark::DoNotOptimize(c.unet->forward(x, t, ctx));
  state.counters["params"] = static_cast<double>(parameter_count(*c.unet));
}
BENCHMARK(BM_CompactUNetStep)->ArgNames({"batch", "latent", "shared_context"})
    ->Args({1, 64, 0})->Args({8, 64, 0})->Args({1, 32, 0})->Args({8, 32, 0})->Args({8, 32, 1})
    ->Args({1, 16, 0})->Args({4, 16, 0})->Args({16, 16, 0})->Args({16, 16, 1})->Args({32, 16, 1})->Args({86, 16, 1})->Unit(benchmark::kMillisecond);

// channels_last (NHWC, oneDNN's preferred layout on the CPU) for the convolutions: the UNet with channels-last conv
// weights and input, on the same workloads as BM_CompactUNetStep (same guard: NoGradGuard).
SdComponents& compact_channels_last() {
  static SdComponents c = [] {
    SdComponents s = compact_preset(0);
    for (auto* m : {static_cast<torch::nn::Module*>(s.unet.get()), static_cast<torch::nn::Module*>(s.vae.get())}) {
      for (auto& p : m->parameters()) {
        if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
      }
    }
    return s;
  }();
  return c;
}

void BM_CompactUNetStepChannelsLast(benchmark::State& state) {
  torch::NoGradGuard ng;
  auto& c = compact_channels_last();
  const int64_t batch = state.range(0), latent = state.range(1);
  const bool shared = state.range(2) == 1;
  const auto x = torch::randn({batch, 9, latent, latent}).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto ctx = torch::randn({shared ? 1 : batch, 77, 64});
  const auto t = torch::tensor({500}, torch::kInt64);
  for (auto _ : state) benchmark::DoNotOptimize(c.unet->forward(x, t, ctx));
}
BENCHMARK(BM_CompactUNetStepChannelsLast)->ArgNames({"batch", "latent", "shared_context"})
    ->Args({1, 32, 0})->Args({8, 32, 0})->Args({8, 32, 1})->Args({16, 16, 1})->Args({32, 16, 1})->Unit(benchmark::kMillisecond);

// VAE encode + decode at 64x64 with channels-last weights and input (compare BM_CompactVae64).
void BM_CompactVae64ChannelsLast(benchmark::State& state) {
  c10::InferenceMode guard;
  auto& c = compact_channels_last();
  const auto x = torch::rand({state.range(0), 3, 64, 64}).contiguous(torch::MemoryFormat::ChannelsLast);
  for (auto _ : state) benchmark::DoNotOptimize(c.vae->decode(c.vae->encode(x).first));
}
BENCHMARK(BM_CompactVae64ChannelsLast)->Arg(1)->Arg(86)->Unit(benchmark::kMillisecond);

void BM_CompactVaeDecode512(benchmark::State& state) {
  torch::NoGradGuard ng;
  auto& c = compact();
  const auto z = torch::randn({1, 4, 512 / c.vae_scale_factor(), 512 / c.vae_scale_factor()});
  for (auto _ : state) benchmark::DoNotOptimize(c.vae->decode(z));
  state.counters["params"] = static_cast<double>(parameter_count(*c.vae));
}
BENCHMARK(BM_CompactVaeDecode512)->Unit(benchmark::kMillisecond);

// VAE encode + decode at 64x64 (the compact bench resolution), batch = range(0).
void BM_CompactVae64(benchmark::State& state) {
  c10::InferenceMode guard;
  auto& c = compact();
  const auto x = torch::rand({state.range(0), 3, 64, 64});
  for (auto _ : state) benchmark::DoNotOptimize(c.vae->decode(c.vae->encode(x).first));
}
BENCHMARK(BM_CompactVae64)->Arg(1)->Arg(86)->Unit(benchmark::kMillisecond);

void BM_CompactInpaint86Masks(benchmark::State& state) {
  auto& c = compact();
  const bool naive = state.range(0) == 1;
  const auto image = torch::rand({3, 128, 128}) * 2 - 1;
  const torch::Tensor masks = paper_masks(128);
  const auto ids = torch::randint(0, 49408, {3, 77}, torch::kInt64);
  InpaintOptions o;  // 50 steps, λ 0.4
  const auto ctx = average_prompt_embedding(c, ids);
  for (auto _ : state) benchmark::DoNotOptimize(naive ? inpaint_naive(c, image, masks, ids, o) : inpaint(c, image, masks, ctx, o));
}
BENCHMARK(BM_CompactInpaint86Masks)->Arg(0)->Arg(1)->ArgName("naive")->Unit(benchmark::kMillisecond)->Iterations(1);

void BM_Sd2UNetStepCuda(benchmark::State& state) {
  if (!torch::cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  torch::NoGradGuard ng;
  static SdComponents c = [] {
    SdComponents s = sd2_inpainting_random(0);
    s.to(torch::kCUDA, torch::kFloat16);
    return s;
  }();
  const int64_t batch = state.range(0);
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat16);
  const auto x = torch::randn({batch, 9, 64, 64}, opts);
  const auto ctx = torch::randn({batch, 77, 1024}, opts);
  const auto t = torch::tensor({500}, torch::kInt64);
  for (auto _ : state) {
    benchmark::DoNotOptimize(c.unet->forward(x, t, ctx).sum().item<float>());  // .item() waits for the GPU
  }
}
BENCHMARK(BM_Sd2UNetStepCuda)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond);

// SD 2 inpainting at 512x512 on CUDA (random weights): latency per image of the paper's workload (86 masks,
// 50-step schedule at λ 0.4 = 20 UNet steps per mask). range(0): 1 naive, 0 batched; range(1): 0 fp32, 1 bf16,
// 2 fp16. Naive runs 8 masks and is scaled to 86: its masks are independent and each is the same work.
void BM_Sd2InpaintCuda(benchmark::State& state) {
  if (!torch::cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const bool naive = state.range(0) == 1;
  const torch::ScalarType dtype = state.range(1) == 0 ? torch::kFloat32 : state.range(1) == 1 ? torch::kBFloat16 : torch::kFloat16;
  static std::map<int64_t, std::unique_ptr<SdComponents>> models;  // one per dtype, built once
  auto& slot = models[state.range(1)];
  if (!slot) {
    slot = std::make_unique<SdComponents>(sd2_inpainting_random(0));
    slot->to(torch::kCUDA, dtype);
  }
  SdComponents& c = *slot;
  const auto image = torch::rand({3, 512, 512}, torch::TensorOptions().dtype(torch::kFloat32)) * 2 - 1;
  const torch::Tensor masks = paper_masks(512);
  const int64_t timed_masks = naive ? 8 : 86;
  const auto ids = torch::randint(0, 49408, {4, 77}, torch::kInt64);
  const auto ctx = average_prompt_embedding(c, ids);
  InpaintOptions o;  // 50 steps, λ 0.4, automatic batch
  inpaint(c, image, masks.narrow(0, 0, 2), ctx, o);  // warm-up: cuDNN algorithm choice, allocator
#ifdef ANOMALYSD_WITH_CUDA
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
#endif
  double ms = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(naive ? inpaint_naive(c, image, masks.narrow(0, 0, timed_masks), ids, o)
                                   : inpaint(c, image, masks, ctx, o));  // results come back to the CPU: synchronised
    ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  state.counters["ms_per_image"] = ms * 86.0 / static_cast<double>(timed_masks);
  state.counters["batch"] = static_cast<double>(naive ? 1 : choose_batch_size(c, 512, 512, 86));
#ifdef ANOMALYSD_WITH_CUDA
  state.counters["peak_MB"] = static_cast<double>(c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak) / 1048576.0;
#endif
}
BENCHMARK(BM_Sd2InpaintCuda)->ArgNames({"naive", "dtype"})
    ->Args({1, 0})->Args({0, 0})->Args({1, 1})->Args({0, 1})->Args({1, 2})->Args({0, 2})
    ->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
