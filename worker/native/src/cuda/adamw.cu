// AdamW on the GPU: one thread per parameter, the CPU op's fp32 operations in the same
// order with explicit round-to-nearest intrinsics (no FMA contraction), so the two
// backends agree to the last bit or two.
#include <cmath>

#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"

namespace {

__global__ void adamw_kernel(int64_t n, float* p, const float* g, float* m, float* v, float decay, float w1, float b2,
                             float w2, float step_size, float bc2_sqrt, float eps) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i];
  const float pi = __fmul_rn(p[i], decay);
  const float mi = w1 < 0.5f ? __fadd_rn(m[i], __fmul_rn(w1, __fsub_rn(gi, m[i])))
                             : __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, m[i]), __fsub_rn(1.0f, w1)));
  const float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(w2, gi), gi));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
  p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(-step_size, mi), denom));
  m[i] = mi;
  v[i] = vi;
}

}  // namespace

namespace lowrank::cuda {

void adamw_dev(int64_t n, float* p, const float* g, float* m, float* v, double lr, double beta1, double beta2,
               double eps, double weight_decay, int64_t t) {
  if (n == 0) return;
  const auto step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, static_cast<double>(t))));
  const auto bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, static_cast<double>(t))));
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  LRK_LAUNCH(adamw_kernel, blocks, 256, 0)(n, p, g, m, v, static_cast<float>(1.0 - lr * weight_decay),
                                           static_cast<float>(1.0 - beta1), static_cast<float>(beta2),
                                           static_cast<float>(1.0 - beta2), step_size, bc2_sqrt,
                                           static_cast<float>(eps));
}

}  // namespace lowrank::cuda

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_adamw(int64_t n, float* p, const float* g, float* m, float* v, double lr, double beta1,
                                     double beta2, double eps, double weight_decay, int64_t t) {
  if (n < 0 || t < 1) return fail(LRK_INVALID_ARGUMENT, "adamw: n >= 0 and step t >= 1");
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps > 0))
    return fail(LRK_INVALID_ARGUMENT, "adamw: betas must be in [0, 1) and eps > 0");
  if (n == 0) return LRK_OK;
  DeviceBuffer dp, dg, dm, dv;
  const size_t bytes = f32_bytes(n);
  if (lrk_status s = dp.alloc(bytes, p)) return s;
  if (lrk_status s = dg.alloc(bytes, g)) return s;
  if (lrk_status s = dm.alloc(bytes, m)) return s;
  if (lrk_status s = dv.alloc(bytes, v)) return s;
  adamw_dev(n, dp.as<float>(), dg.as<float>(), dm.as<float>(), dv.as<float>(), lr, beta1, beta2, eps, weight_decay, t);
  LRK_CUDA_SYNC("adamw kernel");
  if (lrk_status s = dp.to_host(p, bytes)) return s;
  if (lrk_status s = dm.to_host(m, bytes)) return s;
  return dv.to_host(v, bytes);
}
