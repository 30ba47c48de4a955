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
