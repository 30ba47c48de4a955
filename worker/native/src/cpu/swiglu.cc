// SwiGLU on the CPU: act = silu(gate) ⊙ up, as the engine's MLP forward.
#include <cmath>

#include "cpu_ops.h"

extern "C" lrk_status lrk_cpu_swiglu_forward(int64_t n, const float* gate, const float* up, float* act) {
  if (n < 0) return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "swiglu: n >= 0");
  for (int64_t i = 0; i < n; i++) act[i] = gate[i] * (1.0f / (1.0f + std::exp(-gate[i]))) * up[i];
  return LRK_OK;
}

// The engine's MLP backward through silu(gate) ⊙ up.
extern "C" lrk_status lrk_cpu_swiglu_backward(int64_t n, const float* gate, const float* up, const float* dact,
                                              float* dgate, float* dup) {
  if (n < 0) return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "swiglu_backward: n >= 0");
  for (int64_t i = 0; i < n; i++) {
    const float g = gate[i], sg = 1.0f / (1.0f + std::exp(-g)), da = dact[i];
    dup[i] = da * g * sg;
    dgate[i] = da * up[i] * sg * (1.0f + g * (1.0f - sg));
  }
  return LRK_OK;
}
