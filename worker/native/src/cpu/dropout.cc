// The LoRA dropout mask on the CPU, as the engine draws it (Engine::dropout_mask): Philox
// uniforms of (seed, stream), kept where u >= p and scaled by 1/(1 − p).
#include "cpu_ops.h"
#include "lowrank/rng.h"

extern "C" lrk_status lrk_cpu_dropout_mask(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p,
                                           float* mask) {
  if (n < 0 || !(p >= 0.0f && p < 1.0f)) return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "dropout_mask: p in [0, 1)");
  lowrank::philox_fill_uniform(seed, stream, offset, n, mask);
  const float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; i++) mask[i] = mask[i] >= p ? keep : 0.0f;
  return LRK_OK;
}
