// RMSNorm forward on the CPU (transformers LlamaRMSNorm in fp32), as the engine computes
// it: Σx² in double per row, rstd rounded to fp32 once.
#include <cmath>

#include "cpu_ops.h"

extern "C" lrk_status lrk_cpu_rmsnorm_forward(int64_t n, int64_t d, double eps, const float* x, const float* w,
                                              float* y, float* rstd) {
  if (n < 0 || d < 1 || !(eps >= 0)) return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "rmsnorm: n >= 0, d >= 1, eps >= 0");
  for (int64_t i = 0; i < n; i++) {
    const float* xi = x + i * d;
    double ss = 0;
    for (int64_t j = 0; j < d; j++) ss += static_cast<double>(xi[j]) * xi[j];
    const auto r = static_cast<float>(1.0 / std::sqrt(static_cast<double>(static_cast<float>(ss / d)) + eps));
    rstd[i] = r;
    for (int64_t j = 0; j < d; j++) y[i * d + j] = w[j] * (xi[j] * r);
  }
  return LRK_OK;
}

// The engine's rmsnorm_backward: Σ(w⊙dy⊙x) in double per row.
extern "C" lrk_status lrk_cpu_rmsnorm_backward(int64_t n, int64_t d, const float* x, const float* w, const float* rstd,
                                               const float* dy, float* dx, int accumulate) {
  if (n < 0 || d < 1) return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "rmsnorm_backward: n >= 0, d >= 1");
  for (int64_t i = 0; i < n; i++) {
    const float* xi = x + i * d;
    const float* gi = dy + i * d;
    double dot = 0;
    for (int64_t j = 0; j < d; j++) dot += static_cast<double>(w[j]) * gi[j] * xi[j];
    const float r = rstd[i];
    const auto c = static_cast<float>(dot * r * r * r / static_cast<double>(d));
    float* o = dx + i * d;
    for (int64_t j = 0; j < d; j++) {
      const float v = r * (w[j] * gi[j]) - xi[j] * c;
      o[j] = accumulate ? o[j] + v : v;
    }
  }
  return LRK_OK;
}
