// The LoRA dropout mask on the GPU (METHODS §7 P10, §8.2): Philox4x32-10 as src/core/rng.cc
// (key = seed, counter = (block, stream)), element i = word i % 4 of block i / 4, uniform =
// top 24 bits · 2^-24 (exact in fp32). Integer arithmetic only, so the mask has the same
// bytes as the CPU's for any thread layout.
#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"
#include "philox.cuh"

namespace {

__global__ void dropout_kernel(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p, float keep,
                               float* mask) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const float u = lowrank::cuda::philox_uniform(seed, stream, offset + static_cast<uint64_t>(j));
  mask[j] = u >= p ? keep : 0.0f;
}

}  // namespace

namespace lowrank::cuda {

void dropout_mask_dev(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p, float* mask) {
  if (n > 0)
    LRK_LAUNCH(dropout_kernel, static_cast<unsigned>((n + 255) / 256), 256, 0)(seed, stream, offset, n, p,
                                                                             1.0f / (1.0f - p), mask);
}

}  // namespace lowrank::cuda

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_dropout_mask(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p,
                                            float* mask) {
  if (n < 0 || !(p >= 0.0f && p < 1.0f)) return fail(LRK_INVALID_ARGUMENT, "dropout_mask: p in [0, 1)");
  if (n == 0) return LRK_OK;
  DeviceBuffer bm;
  if (lrk_status s = bm.alloc(f32_bytes(n))) return s;
  dropout_mask_dev(seed, stream, offset, n, p, bm.as<float>());
  LRK_CUDA_SYNC("dropout kernel");
  return bm.to_host(mask, f32_bytes(n));
}
