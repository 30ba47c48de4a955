// RMSNorm forward on the GPU: one block per row, Σx² in double by a fixed-shape shared
// memory tree (deterministic), rstd rounded to fp32 once as on the CPU.
#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"

namespace {

constexpr int kThreads = 256;

__global__ void rmsnorm_kernel(int64_t d, double eps, const float* x, const float* w, float* y, float* rstd) {
  __shared__ double part[kThreads];
  const int64_t row = blockIdx.x;
  const float* xi = x + row * d;
  double ss = 0;
  for (int64_t j = threadIdx.x; j < d; j += kThreads) ss += static_cast<double>(xi[j]) * xi[j];
  part[threadIdx.x] = ss;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  const auto r = static_cast<float>(1.0 / sqrt(static_cast<double>(static_cast<float>(part[0] / d)) + eps));
  if (threadIdx.x == 0) rstd[row] = r;
  for (int64_t j = threadIdx.x; j < d; j += kThreads) y[row * d + j] = __fmul_rn(w[j], __fmul_rn(xi[j], r));
}

// dx (+)= rstd·(w⊙dy) − x·rstd³/d·Σ(w⊙dy⊙x), Σ in double by the same fixed tree.
__global__ void rmsnorm_backward_kernel(int64_t d, const float* x, const float* w, const float* rstd, const float* dy,
                                        float* dx, int accumulate) {
  __shared__ double part[kThreads];
  const int64_t row = blockIdx.x;
  const float* xi = x + row * d;
  const float* gi = dy + row * d;
  double dot = 0;
  for (int64_t j = threadIdx.x; j < d; j += kThreads) dot += static_cast<double>(w[j]) * gi[j] * xi[j];
  part[threadIdx.x] = dot;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  const float r = rstd[row];
  const auto c = static_cast<float>(part[0] * r * r * r / static_cast<double>(d));
  for (int64_t j = threadIdx.x; j < d; j += kThreads) {
    const float v = __fsub_rn(__fmul_rn(r, __fmul_rn(w[j], gi[j])), __fmul_rn(xi[j], c));
    dx[row * d + j] = accumulate ? __fadd_rn(dx[row * d + j], v) : v;
  }
}

}  // namespace

namespace lowrank::cuda {

void rmsnorm_forward_dev(int64_t n, int64_t d, double eps, const float* x, const float* w, float* y, float* rstd) {
  if (n > 0) LRK_LAUNCH(rmsnorm_kernel, static_cast<unsigned>(n), kThreads, 0)(d, eps, x, w, y, rstd);
}

void rmsnorm_backward_dev(int64_t n, int64_t d, const float* x, const float* w, const float* rstd, const float* dy,
                          float* dx, int accumulate) {
  if (n > 0) LRK_LAUNCH(rmsnorm_backward_kernel, static_cast<unsigned>(n), kThreads, 0)(d, x, w, rstd, dy, dx, accumulate);
}

}  // namespace lowrank::cuda

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_rmsnorm_forward(int64_t n, int64_t d, double eps, const float* x, const float* w,
                                               float* y, float* rstd) {
  if (n < 0 || d < 1 || !(eps >= 0)) return fail(LRK_INVALID_ARGUMENT, "rmsnorm: n >= 0, d >= 1, eps >= 0");
  if (n == 0) return LRK_OK;
  DeviceBuffer dx, dw, dy, dr;
  if (lrk_status s = dx.alloc(f32_bytes(n * d), x)) return s;
  if (lrk_status s = dw.alloc(f32_bytes(d), w)) return s;
  if (lrk_status s = dy.alloc(f32_bytes(n * d))) return s;
  if (lrk_status s = dr.alloc(f32_bytes(n))) return s;
  rmsnorm_forward_dev(n, d, eps, dx.as<float>(), dw.as<float>(), dy.as<float>(), dr.as<float>());
  LRK_CUDA_SYNC("rmsnorm kernel");
  if (lrk_status s = dy.to_host(y, f32_bytes(n * d))) return s;
  return dr.to_host(rstd, f32_bytes(n));
}

extern "C" lrk_status lrk_cuda_rmsnorm_backward(int64_t n, int64_t d, const float* x, const float* w, const float* rstd,
                                                const float* dy, float* dx, int accumulate) {
  if (n < 0 || d < 1) return fail(LRK_INVALID_ARGUMENT, "rmsnorm_backward: n >= 0, d >= 1");
  if (n == 0) return LRK_OK;
  DeviceBuffer bx, bw, br, bdy, bdx;
  if (lrk_status s = bx.alloc(f32_bytes(n * d), x)) return s;
  if (lrk_status s = bw.alloc(f32_bytes(d), w)) return s;
  if (lrk_status s = br.alloc(f32_bytes(n), rstd)) return s;
  if (lrk_status s = bdy.alloc(f32_bytes(n * d), dy)) return s;
  if (lrk_status s = bdx.alloc(f32_bytes(n * d), accumulate ? dx : nullptr)) return s;
  rmsnorm_backward_dev(n, d, bx.as<float>(), bw.as<float>(), br.as<float>(), bdy.as<float>(), bdx.as<float>(),
                       accumulate);
  LRK_CUDA_SYNC("rmsnorm_backward kernel");
  return bdx.to_host(dx, f32_bytes(n * d));
}
