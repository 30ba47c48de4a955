// RoPE on the GPU: one thread per (row, head, pair), the CPU's rotate_half formula.
#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"

namespace {

__global__ void rope_kernel(float* x, int64_t n, int64_t ld, int64_t heads, int64_t half, const int64_t* pos,
                            const float* cos, const float* sin, int inverse) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * heads * half) return;
  const int64_t i = t % half, h = (t / half) % heads, r = t / (half * heads);
  float* v = x + r * ld + h * 2 * half;
  const float c = cos[pos[r] * half + i], s = sin[pos[r] * half + i];
  const float x1 = v[i], x2 = v[i + half];
  if (!inverse) {
    v[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
    v[i + half] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
  } else {
    v[i] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
    v[i + half] = __fsub_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
  }
}

}  // namespace

namespace lowrank::cuda {

void rope_apply_dev(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* pos,
                    const float* cos, const float* sin, int inverse) {
  const int64_t half = head_dim / 2, work = n * heads * half;
  if (work > 0)
    LRK_LAUNCH(rope_kernel, static_cast<unsigned>((work + 255) / 256), 256, 0)(x, n, ld, heads, half, pos, cos, sin,
                                                                             inverse);
}

}  // namespace lowrank::cuda

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_rope_apply(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim,
                                          const int64_t* pos, int64_t npos, const float* cos, const float* sin,
                                          int inverse) {
  if (n < 0 || heads < 1 || head_dim < 2 || head_dim % 2 || ld < heads * head_dim)
    return fail(LRK_INVALID_ARGUMENT, "rope: heads >= 1, head_dim even, ld >= heads * head_dim");
  for (int64_t i = 0; i < n; i++)
    if (pos[i] < 0 || pos[i] >= npos) return fail(LRK_INVALID_ARGUMENT, "rope: a position is outside the tables");
  if (n == 0) return LRK_OK;
  const int64_t half = head_dim / 2;
  DeviceBuffer dx, dp, dc, ds;
  if (lrk_status s = dx.alloc(f32_bytes(n * ld), x)) return s;
  if (lrk_status s = dp.alloc(static_cast<size_t>(n) * sizeof(int64_t), pos)) return s;
  if (lrk_status s = dc.alloc(f32_bytes(npos * half), cos)) return s;
  if (lrk_status s = ds.alloc(f32_bytes(npos * half), sin)) return s;
  rope_apply_dev(dx.as<float>(), n, ld, heads, head_dim, dp.as<int64_t>(), dc.as<float>(), ds.as<float>(), inverse);
  LRK_CUDA_SYNC("rope kernel");
  return dx.to_host(x, f32_bytes(n * ld));
}
