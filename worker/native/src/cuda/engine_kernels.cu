// The device engine's elementwise kernels (device_ops.cuh): the embedding lookup, the
// residual adds, dropout's x ⊙ D, projection biases, the gradient clip's scale and the
// per-tensor Σg² of clip_grad_norm_ (double, a fixed-shape tree: deterministic).
#include <cuda_bf16.h>

#include "device_ops.cuh"
#include "widen.cuh"

namespace lowrank::cuda {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void embed_kernel(int64_t n, int64_t d, const int32_t* tokens, const T* embed, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * d) return;
  const int64_t row = i / d, j = i % d;
  out[i] = widen(embed[static_cast<int64_t>(tokens[row]) * d + j]);
}

__global__ void add_kernel(int64_t n, const float* a, const float* b, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __fadd_rn(a[i], b[i]);
}

__global__ void mul_kernel(int64_t n, const float* a, const float* b, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __fmul_rn(a[i], b[i]);
}

__global__ void bias_kernel(int64_t n, int64_t out, const float* bias, float* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n * out) y[i] = __fadd_rn(y[i], bias[i % out]);
}

__global__ void scale_kernel(int64_t n, float c, float* x) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fmul_rn(x[i], c);
}

__global__ void copy_kernel(int64_t n, const float* src, float* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i];
}

__global__ void rows_store_kernel(int64_t rows, int64_t t, int64_t width, int64_t ld_rows, int64_t offset,
                                  const float* src, float* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * t * width) return;
  const int64_t row = i / width, e = i % width, b = row / t, j = row % t;
  dst[(b * ld_rows + offset + j) * width + e] = src[i];
}

__global__ void rows_last_kernel(int64_t rows, int64_t t, int64_t width, const float* src, float* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * width) return;
  const int64_t b = i / width, e = i % width;
  dst[i] = src[(b * t + t - 1) * width + e];
}

__global__ void sum_squares_kernel(const int64_t* offsets, const int64_t* sizes, const float* x, double* sums) {
  __shared__ double part[kThreads];
  const int64_t t = blockIdx.x;
  const float* xt = x + offsets[t];
  double s = 0;
  for (int64_t j = threadIdx.x; j < sizes[t]; j += kThreads) s += static_cast<double>(xt[j]) * xt[j];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) sums[t] = part[0];
}

}  // namespace

void embed_gather_dev(int64_t n, int64_t d, const int32_t* tokens, const void* embed, lrk_dtype dtype, float* out) {
  if (n * d == 0) return;
  if (dtype == LRK_BF16) {
    LRK_LAUNCH(embed_kernel<__nv_bfloat16>, blocks(n * d), kThreads, 0)(n, d, tokens,
                                                                        static_cast<const __nv_bfloat16*>(embed), out);
  } else {
    LRK_LAUNCH(embed_kernel<float>, blocks(n * d), kThreads, 0)(n, d, tokens, static_cast<const float*>(embed), out);
  }
}

void add_dev(int64_t n, const float* a, const float* b, float* out) {
  if (n > 0) LRK_LAUNCH(add_kernel, blocks(n), kThreads, 0)(n, a, b, out);
}

void mul_dev(int64_t n, const float* a, const float* b, float* out) {
  if (n > 0) LRK_LAUNCH(mul_kernel, blocks(n), kThreads, 0)(n, a, b, out);
}

void bias_add_dev(int64_t n, int64_t out, const float* bias, float* y) {
  if (n * out > 0) LRK_LAUNCH(bias_kernel, blocks(n * out), kThreads, 0)(n, out, bias, y);
}

void scale_dev(int64_t n, float c, float* x) {
  if (n > 0) LRK_LAUNCH(scale_kernel, blocks(n), kThreads, 0)(n, c, x);
}

void copy_dev(int64_t n, const float* src, float* dst) {
  if (n > 0) LRK_LAUNCH(copy_kernel, blocks(n), kThreads, 0)(n, src, dst);
}

void rows_store_dev(int64_t rows, int64_t t, int64_t width, int64_t ld_rows, int64_t offset, const float* src, float* dst) {
  if (rows * t * width > 0)
    LRK_LAUNCH(rows_store_kernel, blocks(rows * t * width), kThreads, 0)(rows, t, width, ld_rows, offset, src, dst);
}

void rows_last_dev(int64_t rows, int64_t t, int64_t width, const float* src, float* dst) {
  if (rows * width > 0) LRK_LAUNCH(rows_last_kernel, blocks(rows * width), kThreads, 0)(rows, t, width, src, dst);
}

void sum_squares_dev(int64_t tensors, const int64_t* offsets, const int64_t* sizes, const float* x, double* sums) {
  if (tensors > 0)
    LRK_LAUNCH(sum_squares_kernel, static_cast<unsigned>(tensors), kThreads, 0)(offsets, sizes, x, sums);
}

}  // namespace lowrank::cuda
