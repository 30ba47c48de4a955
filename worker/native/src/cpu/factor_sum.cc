// The weighted sum of factor products on the CPU: delta = Σ_i w_i B_i A_i, one GEMM per
// adapter accumulated in order (METHODS §2.2 `linear`; fixed order, §8.2).
#include "cpu_ops.h"
#include "lowrank/linalg.h"

extern "C" lrk_status lrk_cpu_factor_sum(int64_t count, const int64_t* ranks, int64_t out, int64_t in,
                                         const float* const* b, const float* const* a, const float* weight,
                                         float* delta) {
  return lowrank::cpu::guard([&] {
    if (count < 0 || out < 1 || in < 1) return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "factor_sum: out, in >= 1");
    for (int64_t i = 0; i < out * in; i++) delta[i] = 0.0f;
    for (int64_t i = 0; i < count; i++) {
      if (ranks[i] < 0) return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "factor_sum: a rank is negative");
      if (ranks[i] == 0) continue;
      lowrank::gemm(false, false, out, in, ranks[i], weight[i], b[i], ranks[i], a[i], in, 1.0f, delta, in);
    }
    return LRK_OK;
  });
}
