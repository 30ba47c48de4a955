// Causal GQA attention of one sequence on the GPU, the plain version: one block per
// (query, head); scores in shared memory (T ≤ 8192), max and Σexp by fixed-shape trees
// (sum in double, as the CPU), then each thread forms P·V for its output features with j
// in order. Deterministic; O(T²) work with no tiling: a correctness kernel, not a flash one.
#include <cmath>

#include "common.cuh"
#include "cuda_ops.h"

namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxT = 8192;

__global__ void attention_kernel(int64_t T, int64_t heads, int64_t group, int64_t hd, float scale, const float* q,
                                 const float* k, const float* v, float* out) {
  LRK_DYNAMIC_SHARED(float, p);  // [T]
  __shared__ float fred[kThreads];
  __shared__ double dred[kThreads];
  const int64_t i = blockIdx.x, h = blockIdx.y, kh = h / group;
  const int64_t qd = heads * hd, kvd = (heads / group) * hd;
  const float* qi = q + i * qd + h * hd;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j <= i; j += kThreads) {
    const float* kj = k + j * kvd + kh * hd;
    float s = 0;
    for (int64_t e = 0; e < hd; e++) s = __fadd_rn(s, __fmul_rn(qi[e], kj[e]));
    p[j] = __fmul_rn(s, scale);
    mx = fmaxf(mx, p[j]);
  }
  fred[threadIdx.x] = mx;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) fred[threadIdx.x] = fmaxf(fred[threadIdx.x], fred[threadIdx.x + s]);
    __syncthreads();
  }
  mx = fred[0];
  double sum = 0;
  for (int64_t j = threadIdx.x; j <= i; j += kThreads) {
    p[j] = expf(p[j] - mx);
    sum += p[j];
  }
  dred[threadIdx.x] = sum;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) dred[threadIdx.x] += dred[threadIdx.x + s];
    __syncthreads();
  }
  const auto inv = static_cast<float>(1.0 / dred[0]);
  for (int64_t e = threadIdx.x; e < hd; e += kThreads) {
    float o = 0;
    for (int64_t j = 0; j <= i; j++) o = __fadd_rn(o, __fmul_rn(__fmul_rn(p[j], inv), v[j * kvd + kh * hd + e]));
    out[i * qd + h * hd + e] = o;
  }
}

}  // namespace

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_attention_forward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                                 const float* q, const float* k, const float* v, float* out) {
  if (T < 0 || heads < 1 || kv_heads < 1 || heads % kv_heads || head_dim < 1)
    return fail(LRK_INVALID_ARGUMENT, "attention: heads must be a multiple of kv_heads >= 1");
  if (T > kMaxT) return fail(LRK_INVALID_ARGUMENT, "attention: the CUDA kernel takes sequences of at most 8192 tokens");
  if (T == 0) return LRK_OK;
  const int64_t qd = heads * head_dim, kvd = kv_heads * head_dim;
  DeviceBuffer dq, dk, dv, dout;
  if (lrk_status s = dq.alloc(f32_bytes(T * qd), q)) return s;
  if (lrk_status s = dk.alloc(f32_bytes(T * kvd), k)) return s;
  if (lrk_status s = dv.alloc(f32_bytes(T * kvd), v)) return s;
  if (lrk_status s = dout.alloc(f32_bytes(T * qd))) return s;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(heads));
  LRK_LAUNCH(attention_kernel, grid, kThreads, f32_bytes(T))(T, heads, heads / kv_heads, head_dim, scale, dq.as<float>(),
                                                     dk.as<float>(), dv.as<float>(), dout.as<float>());
  LRK_CUDA_SYNC("attention kernel");
  return dout.to_host(out, f32_bytes(T * qd));
}
