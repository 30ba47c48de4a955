// DoRA's pieces on the device (METHODS §1.3, PEFT semantics, engine.cc's linear_forward /
// linear_backward / dora_dropout_backward): the detached norm n = ‖W + s·BA‖ per output row,
// the rescale y = (m/n) ⊙ z, the magnitude gradient dm += Σ_tokens dy ⊙ z / n and dy ⊙ (m/n);
// with LoRA dropout, PEFT's path that recomputes W x̃: the output's combination and the two
// rescaled output gradients. Elementwise steps in the CPU's fp32 order, without FMA.
// Sums in double in the CPU's order (one thread per output row or column, tokens in order).
#include <cuda_bf16.h>

#include "device_ops.cuh"
#include "gemm.cuh"
#include "widen.cuh"

namespace lowrank::cuda {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void dora_norm_kernel(int64_t out, int64_t in, const T* w, float scale, const float* ba, float* norm) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= out) return;
  double ss = 0;
  for (int64_t j = 0; j < in; j++) {
    const float v = __fadd_rn(widen(w[o * in + j]), __fmul_rn(scale, ba[o * in + j]));
    ss += static_cast<double>(v) * v;
  }
  norm[o] = static_cast<float>(sqrt(ss));
}

// y = z ⊙ (m/n) per output column (z and y may alias).
__global__ void dora_scale_kernel(int64_t n, int64_t out, const float* z, const float* m, const float* norm, float* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * out) return;
  const int64_t o = i % out;
  y[i] = __fmul_rn(z[i], __fdiv_rn(m[o], norm[o]));
}

__global__ void dora_grad_m_kernel(int64_t n, int64_t out, const float* dy, const float* z, const float* norm,
                                   float* gm) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= out) return;
  double acc = 0;
  for (int64_t i = 0; i < n; i++) acc += static_cast<double>(dy[i * out + o]) * z[i * out + o];
  gm[o] = __fadd_rn(gm[o], static_cast<float>(acc / norm[o]));
}

__global__ void dora_dropout_combine_kernel(int64_t n, int64_t out, const float* wxd, const float* z, const float* m,
                                            const float* norm, float* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * out) return;
  const int64_t o = i % out;
  const float g = __fdiv_rn(m[o], norm[o]);
  y[i] = __fadd_rn(__fadd_rn(y[i], __fmul_rn(__fsub_rn(g, 1.0f), wxd[i])), __fmul_rn(g, __fsub_rn(z[i], wxd[i])));
}

__global__ void dora_dropout_dy_kernel(int64_t n, int64_t out, const float* dy, const float* m, const float* norm,
                                       float* dyg, float* dyg1) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * out) return;
  const int64_t o = i % out;
  const float g = __fdiv_rn(m[o], norm[o]);
  dyg[i] = __fmul_rn(dy[i], g);
  dyg1[i] = __fmul_rn(dy[i], __fsub_rn(g, 1.0f));
}

}  // namespace

void dora_dropout_combine_dev(int64_t n, int64_t out, const float* wxd, const float* z, const float* m,
                              const float* norm, float* y) {
  if (n * out > 0) LRK_LAUNCH(dora_dropout_combine_kernel, blocks(n * out), kThreads, 0)(n, out, wxd, z, m, norm, y);
}

void dora_dropout_dy_dev(int64_t n, int64_t out, const float* dy, const float* m, const float* norm, float* dyg,
                         float* dyg1) {
  if (n * out > 0) LRK_LAUNCH(dora_dropout_dy_kernel, blocks(n * out), kThreads, 0)(n, out, dy, m, norm, dyg, dyg1);
}

void dora_norm_dev(int64_t out, int64_t in, const void* w, lrk_dtype w_dtype, float scale, const float* a,
                   const float* b, int64_t r, float* ba, float* norm) {
  gemm(false, false, out, in, r, 1.0f, b, r, a, in, 0.0f, ba, in);
  if (w_dtype == LRK_BF16) {
    LRK_LAUNCH(dora_norm_kernel<__nv_bfloat16>, blocks(out), kThreads, 0)(
        out, in, static_cast<const __nv_bfloat16*>(w), scale, ba, norm);
  } else {
    LRK_LAUNCH(dora_norm_kernel<float>, blocks(out), kThreads, 0)(out, in, static_cast<const float*>(w), scale, ba,
                                                                  norm);
  }
}

void dora_scale_dev(int64_t n, int64_t out, const float* z, const float* m, const float* norm, float* y) {
  if (n * out > 0) LRK_LAUNCH(dora_scale_kernel, blocks(n * out), kThreads, 0)(n, out, z, m, norm, y);
}

void dora_grad_m_dev(int64_t n, int64_t out, const float* dy, const float* z, const float* norm, float* gm) {
  if (out > 0) LRK_LAUNCH(dora_grad_m_kernel, blocks(out), kThreads, 0)(n, out, dy, z, norm, gm);
}

}  // namespace lowrank::cuda
