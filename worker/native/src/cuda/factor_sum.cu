// The weighted sum of factor products on the GPU: delta = Σ_i w_i B_i A_i, one GEMM per
// adapter with β = 1, in order (the CPU's order; deterministic).
#include <vector>

#include "cuda_ops.h"
#include "gemm.cuh"

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_factor_sum(int64_t count, const int64_t* ranks, int64_t out, int64_t in,
                                          const float* const* b, const float* const* a, const float* weight,
                                          float* delta) {
  if (count < 0 || out < 1 || in < 1) return fail(LRK_INVALID_ARGUMENT, "factor_sum: out, in >= 1");
  for (int64_t i = 0; i < count; i++)
    if (ranks[i] < 0) return fail(LRK_INVALID_ARGUMENT, "factor_sum: a rank is negative");
  DeviceBuffer d;
  if (lrk_status s = d.alloc(f32_bytes(out * in))) return s;
  LRK_CUDA_TRY(cudaMemset(d.as<float>(), 0, f32_bytes(out * in)));
  for (int64_t i = 0; i < count; i++) {
    const int64_t r = ranks[i];
    if (r == 0) continue;
    DeviceBuffer db, da;
    if (lrk_status s = db.alloc(f32_bytes(out * r), b[i])) return s;
    if (lrk_status s = da.alloc(f32_bytes(r * in), a[i])) return s;
    gemm(false, false, out, in, r, weight[i], db.as<float>(), r, da.as<float>(), in, 1.0f, d.as<float>(), in);
    LRK_CUDA_SYNC("factor_sum gemm");  // before db/da are freed
  }
  return d.to_host(delta, f32_bytes(out * in));
}
