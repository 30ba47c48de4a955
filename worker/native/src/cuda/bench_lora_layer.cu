// A device-resident benchmark of the LoRA hot path (not an op of the table): forward and
// backward of the seven adapted projections of one Llama layer, bf16 W, fp32 activations
// and adapters, the same kernels as lrk_cuda_lora_forward/backward without the host
// staging. bench/cuda.bench.ts calls it through the addon and compares with PyTorch + PEFT.
#include <cuda_bf16.h>

#include "common.cuh"
#include "gemm.cuh"

namespace {

// Deterministic uniform values in [-scale, scale] from the index (a 32-bit mix).
template <typename T>
__global__ void fill_kernel(T* p, int64_t n, uint32_t seed, float scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
  h ^= h >> 16;
  h *= 0x7feb352du;
  h ^= h >> 15;
  const float u = (static_cast<float>(h) / 4294967296.0f * 2.0f - 1.0f) * scale;
  p[i] = static_cast<T>(u);
}

template <typename T>
lrk_status fill(lowrank::cuda::DeviceBuffer* b, int64_t n, uint32_t seed, float scale) {
  if (lrk_status s = b->alloc(static_cast<size_t>(n) * sizeof(T))) return s;
  LRK_LAUNCH(fill_kernel<T>, static_cast<unsigned>((n + 255) / 256), 256, 0)(b->as<T>(), n, seed, scale);
  return lowrank::cuda::check(cudaGetLastError(), "fill kernel");
}

struct Proj {
  int64_t in, out;
  lowrank::cuda::DeviceBuffer w, a, b, x, y, h, dy, dx, g, ga, gb;
};

}  // namespace

using namespace lowrank::cuda;

/**
 * Times `iters` iterations (after one warm-up) of forward + backward over the seven
 * projections for `tokens` tokens; ms_per_iter and the device memory it held (bytes).
 */
extern "C" LRK_API lrk_status lrk_cuda_bench_lora_layer(int64_t tokens, int64_t hidden, int64_t inter, int64_t q_dim,
                                                        int64_t kv_dim, int64_t r, int iters, double* ms_per_iter,
                                                        double* bytes_held) {
  if (tokens < 1 || hidden < 1 || inter < 1 || q_dim < 1 || kv_dim < 1 || r < 1 || iters < 1)
    return fail(LRK_INVALID_ARGUMENT, "bench: every size and iters must be >= 1");
  size_t free0 = 0, total = 0;
  LRK_CUDA_TRY(cudaMemGetInfo(&free0, &total));
  const int64_t dims[7][2] = {{hidden, q_dim}, {hidden, kv_dim}, {hidden, kv_dim}, {q_dim, hidden},
                              {hidden, inter}, {hidden, inter}, {inter, hidden}};  // q k v o gate up down: {in, out}
  Proj p[7];
  for (int i = 0; i < 7; i++) {
    Proj& q = p[i];
    q.in = dims[i][0];
    q.out = dims[i][1];
    const auto seed = static_cast<uint32_t>(i * 16);
    if (lrk_status s = fill<__nv_bfloat16>(&q.w, q.out * q.in, seed + 1, 0.02f)) return s;
    if (lrk_status s = fill<float>(&q.a, r * q.in, seed + 2, 0.02f)) return s;
    if (lrk_status s = fill<float>(&q.b, q.out * r, seed + 3, 0.02f)) return s;
    if (lrk_status s = fill<float>(&q.x, tokens * q.in, seed + 4, 1.0f)) return s;
    if (lrk_status s = fill<float>(&q.dy, tokens * q.out, seed + 5, 1.0f)) return s;
    if (lrk_status s = fill<float>(&q.ga, r * q.in, seed + 6, 0.0f)) return s;
    if (lrk_status s = fill<float>(&q.gb, q.out * r, seed + 7, 0.0f)) return s;
    if (lrk_status s = q.y.alloc(f32_bytes(tokens * q.out))) return s;
    if (lrk_status s = q.h.alloc(f32_bytes(tokens * r))) return s;
    if (lrk_status s = q.dx.alloc(f32_bytes(tokens * q.in))) return s;
    if (lrk_status s = q.g.alloc(f32_bytes(tokens * r))) return s;
  }
  auto step = [&]() {
    for (Proj& q : p) {
      const int64_t n = tokens;
      float *x = q.x.as<float>(), *h = q.h.as<float>(), *a = q.a.as<float>(), *b = q.b.as<float>();
      float *dy = q.dy.as<float>(), *g = q.g.as<float>();
      const auto* w = q.w.as<__nv_bfloat16>();
      gemm(false, true, n, r, q.in, 1.0f, x, q.in, a, q.in, 0.0f, h, r);
      gemm2<__nv_bfloat16>(n, q.out, {false, true, q.in, 1.0f, x, q.in, w, q.in}, {false, true, r, 2.0f, h, r, b, r}, 0.0f,
                           q.y.as<float>(), q.out);
      gemm(false, false, n, r, q.out, 1.0f, dy, q.out, b, r, 0.0f, g, r);
      gemm(true, false, q.out, r, n, 2.0f, dy, q.out, h, r, 1.0f, q.gb.as<float>(), r);
      gemm(true, false, r, q.in, n, 2.0f, g, r, x, q.in, 1.0f, q.ga.as<float>(), q.in);
      gemm2<__nv_bfloat16>(n, q.in, {false, false, q.out, 1.0f, dy, q.out, w, q.in}, {false, false, r, 2.0f, g, r, a, q.in},
                           0.0f, q.dx.as<float>(), q.in);
    }
  };
  step();
  LRK_CUDA_SYNC("bench warm-up");
  size_t free1 = 0;
  LRK_CUDA_TRY(cudaMemGetInfo(&free1, &total));
  cudaEvent_t t0, t1;
  LRK_CUDA_TRY(cudaEventCreate(&t0));
  LRK_CUDA_TRY(cudaEventCreate(&t1));
  LRK_CUDA_TRY(cudaEventRecord(t0));
  for (int i = 0; i < iters; i++) step();
  LRK_CUDA_TRY(cudaEventRecord(t1));
  LRK_CUDA_SYNC("bench iterations");
  float ms = 0;
  LRK_CUDA_TRY(cudaEventElapsedTime(&ms, t0, t1));
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  *ms_per_iter = static_cast<double>(ms) / iters;
  *bytes_held = static_cast<double>(free0 - free1);
  return LRK_OK;
}
