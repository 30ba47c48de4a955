// Philox4x32-10 on the device as src/core/rng.cc (METHODS §7 P10): key = seed, counter =
// (block, stream), element i = word i % 4 of block i / 4. Integer arithmetic only, so any
// thread layout gives the CPU's bytes (the dropout masks, DARE's keep masks).
#pragma once
#include <cstdint>

namespace lowrank::cuda {

__device__ inline void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

__device__ inline uint32_t philox_word(uint64_t seed, uint64_t stream, uint64_t i) {
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
    philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  const uint32_t w[4] = {c0, c1, c2, c3};
  return w[i % 4];
}

/** The uniform in [0, 1) of element i: the top 24 bits · 2^-24 (exact in fp32), as philox_fill_uniform. */
__device__ inline float philox_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  return static_cast<float>(philox_word(seed, stream, i) >> 8) * 0x1p-24f;
}

}  // namespace lowrank::cuda
