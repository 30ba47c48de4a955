// Causal-LM cross-entropy on the CPU, the engine's fused loss and softmax backward:
// lse = max + log Σ exp(z − max) (sum in double), loss = lse − z[label],
// dlogits = scale·(exp(z − lse) − onehot); label −100 rows: loss 0, zero gradient.
#include <algorithm>
#include <cmath>

#include "cpu_ops.h"

extern "C" lrk_status lrk_cpu_cross_entropy(int64_t n, int64_t vocab, const float* logits, const int32_t* labels,
                                            float scale, float* loss, float* dlogits) {
  using lowrank::cpu::fail;
  if (n < 0 || vocab < 1) return fail(LRK_INVALID_ARGUMENT, "cross_entropy: n >= 0, vocab >= 1");
  for (int64_t i = 0; i < n; i++)
    if (labels[i] != -100 && (labels[i] < 0 || labels[i] >= vocab))
      return fail(LRK_INVALID_ARGUMENT, "cross_entropy: a label is outside [0, vocab) and not -100");
  for (int64_t i = 0; i < n; i++) {
    const float* z = logits + i * vocab;
    float* g = dlogits + i * vocab;
    if (labels[i] == -100) {
      loss[i] = 0.0f;
      std::fill(g, g + vocab, 0.0f);
      continue;
    }
    float mx = -INFINITY;
    for (int64_t j = 0; j < vocab; j++) mx = std::max(mx, z[j]);
    double sum = 0;
    for (int64_t j = 0; j < vocab; j++) sum += std::exp(z[j] - mx);
    const auto lse = static_cast<float>(std::log(sum) + mx);
    loss[i] = lse - z[labels[i]];
    for (int64_t j = 0; j < vocab; j++) g[j] = std::exp(z[j] - lse) * scale;
    g[labels[i]] -= scale;
  }
  return LRK_OK;
}
