// The LoRA dropout mask on the GPU (METHODS §7 P10, §8.2): Philox4x32-10 as src/core/rng.cc
// (key = seed, counter = (block, stream)), element i = word i % 4 of block i / 4, uniform =
// top 24 bits · 2^-24 (exact in fp32). Integer arithmetic only, so the mask has the same
// bytes as the CPU's for any thread layout.
#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"

namespace {

__device__ inline void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

__device__ uint32_t philox_word(uint64_t seed, uint64_t stream, uint64_t i) {
  const uint64_t block = i / 4;
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(stream), c3 = static_cast<uint32_t>(stream >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  const uint32_t w[4] = {c0, c1, c2, c3};
  return w[i % 4];
}

__global__ void dropout_kernel(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p, float keep,
                               float* mask) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const float u = static_cast<float>(philox_word(seed, stream, offset + static_cast<uint64_t>(j)) >> 8) * 0x1p-24f;
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
