// AdamW on the CPU: torch's _single_tensor_adamw in fp32, the engine's optimizer step
// (src/train/optim.cc) on one flat tensor.
#include <cmath>

#include "cpu_ops.h"

extern "C" lrk_status lrk_cpu_adamw(int64_t n, float* p, const float* g, float* m, float* v, double lr, double beta1,
                                    double beta2, double eps, double weight_decay, int64_t t) {
  using lowrank::cpu::fail;
  if (n < 0 || t < 1) return fail(LRK_INVALID_ARGUMENT, "adamw: n >= 0 and step t >= 1");
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps > 0))
    return fail(LRK_INVALID_ARGUMENT, "adamw: betas must be in [0, 1) and eps > 0");
  const auto decay = static_cast<float>(1.0 - lr * weight_decay);
  const auto w1 = static_cast<float>(1.0 - beta1);
  const auto b2 = static_cast<float>(beta2), w2 = static_cast<float>(1.0 - beta2);
  const auto step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, static_cast<double>(t))));
  const auto bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, static_cast<double>(t))));
  const auto e = static_cast<float>(eps);
  for (int64_t i = 0; i < n; i++) {
    p[i] *= decay;
    m[i] = w1 < 0.5f ? m[i] + w1 * (g[i] - m[i]) : g[i] - (g[i] - m[i]) * (1.0f - w1);  // torch lerp
    v[i] = v[i] * b2 + w2 * g[i] * g[i];
    const float denom = std::sqrt(v[i]) / bc2_sqrt + e;
    p[i] = p[i] + -step_size * m[i] / denom;
  }
  return LRK_OK;
}
