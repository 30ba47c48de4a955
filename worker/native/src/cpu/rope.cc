// RoPE on the CPU: the engine's own rotation (src/train/rope.cc), bounds checked here.
#include "../train/rope.h"
#include "cpu_ops.h"

extern "C" lrk_status lrk_cpu_rope_apply(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim,
                                         const int64_t* pos, int64_t npos, const float* cos, const float* sin,
                                         int inverse) {
  using lowrank::cpu::fail;
  if (n < 0 || heads < 1 || head_dim < 2 || head_dim % 2 || ld < heads * head_dim)
    return fail(LRK_INVALID_ARGUMENT, "rope: heads >= 1, head_dim even, ld >= heads * head_dim");
  for (int64_t i = 0; i < n; i++)
    if (pos[i] < 0 || pos[i] >= npos) return fail(LRK_INVALID_ARGUMENT, "rope: a position is outside the tables");
  lowrank::train::rope_apply(x, n, ld, heads, head_dim, pos, cos, sin, inverse != 0);
  return LRK_OK;
}
