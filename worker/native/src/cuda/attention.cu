// Causal GQA attention of one sequence on the GPU, forward and backward, the plain
// versions. Forward: one block per (query, head); scores in shared memory (T ≤ 8192), max
// and Σexp by fixed-shape trees (sum in double, as the CPU), then each thread forms P·V for
// its output features with j in order. Deterministic; O(T²) work and, in the backward,
// O(H·T²) memory with no tiling: correctness kernels, not flash ones.
#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"
#include "gemm.cuh"

namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxT = 8192;

// The first key query i sees: causal, sliding window, packed documents (engine.cc's causal_softmax).
__device__ inline int64_t first_key(int64_t i, int64_t window, const int64_t* doc_start) {
  int64_t lo = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
  if (doc_start && doc_start[i] > lo) lo = doc_start[i];
  return lo;
}

// Query row r (block x) sits at position i = q0 + r of the keys (q0 = 0: one sequence; q0 > 0:
// new tokens against a KV cache of q0 earlier positions); doc_start is indexed by r.
__global__ void attention_kernel(int64_t q0, int64_t heads, int64_t group, int64_t hd, float scale, int64_t window,
                                 const int64_t* doc_start, const float* q, const float* k, const float* v, float* out) {
  LRK_DYNAMIC_SHARED(float, p);  // [q0 + rows]
  __shared__ float fred[kThreads];
  __shared__ double dred[kThreads];
  const int64_t r = blockIdx.x, i = q0 + r, h = blockIdx.y, kh = h / group;
  int64_t lo = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
  if (doc_start && doc_start[r] > lo) lo = doc_start[r];
  const int64_t qd = heads * hd, kvd = (heads / group) * hd;
  const float* qi = q + r * qd + h * hd;
  float mx = -INFINITY;
  for (int64_t j = lo + threadIdx.x; j <= i; j += kThreads) {
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
  for (int64_t j = lo + threadIdx.x; j <= i; j += kThreads) {
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
    for (int64_t j = lo; j <= i; j++) o = __fadd_rn(o, __fmul_rn(__fmul_rn(p[j], inv), v[j * kvd + kh * hd + e]));
    out[r * qd + h * hd + e] = o;
  }
}

// Backward, step 1: one block per (query i, head h) recomputes P's row i as the forward
// does and writes it with dS_i = P_i ⊙ (dO_i Vᵀ − Σ_j P_ij (dO_i·V_j)) into [H, T, T]
// buffers (zeros past the diagonal); the three products then run as GEMMs per head.
// Heads h0 .. h0 + gridDim.y − 1; P and dS hold that chunk ([chunk, T, T]).
__global__ void attention_ds_kernel(int64_t T, int64_t heads, int64_t group, int64_t hd, float scale, int64_t window,
                                    const int64_t* doc_start, const float* q, const float* k, const float* v,
                                    const float* dout, float* P, float* dS, int64_t h0) {
  __shared__ float fred[kThreads];
  __shared__ double dred[kThreads];
  const int64_t i = blockIdx.x, hl = blockIdx.y, h = h0 + hl, kh = h / group, lo = first_key(i, window, doc_start);
  const int64_t qd = heads * hd, kvd = (heads / group) * hd;
  const float* qi = q + i * qd + h * hd;
  const float* doi = dout + i * qd + h * hd;
  float* p = P + (hl * T + i) * T;
  float* g = dS + (hl * T + i) * T;
  float mx = -INFINITY;
  for (int64_t j = lo + threadIdx.x; j <= i; j += kThreads) {
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
  for (int64_t j = lo + threadIdx.x; j <= i; j += kThreads) {
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
  __syncthreads();  // every thread has read dred[0] before it is reused
  double dot = 0;
  for (int64_t j = threadIdx.x; j < T; j += kThreads) {
    if (j > i || j < lo) {
      p[j] = 0.0f;
      g[j] = 0.0f;
      continue;
    }
    p[j] = __fmul_rn(p[j], inv);
    const float* vj = v + j * kvd + kh * hd;
    float dp = 0;
    for (int64_t e = 0; e < hd; e++) dp = __fadd_rn(dp, __fmul_rn(doi[e], vj[e]));
    g[j] = dp;
    dot += static_cast<double>(p[j]) * dp;
  }
  dred[threadIdx.x] = dot;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) dred[threadIdx.x] += dred[threadIdx.x + s];
    __syncthreads();
  }
  const auto df = static_cast<float>(dred[0]);
  for (int64_t j = lo + threadIdx.x; j <= i; j += kThreads) g[j] = __fmul_rn(p[j], __fsub_rn(g[j], df));
}

}  // namespace

namespace lowrank::cuda {

void attention_forward_dev(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                           const int64_t* doc_start, const float* q, const float* k, const float* v, float* out) {
  if (T == 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(heads));
  LRK_LAUNCH(attention_kernel, grid, kThreads, f32_bytes(T))(0, heads, heads / kv_heads, head_dim, scale, window,
                                                             doc_start, q, k, v, out);
}

void attention_cached_dev(int64_t t, int64_t q0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                          const int64_t* key_start, const float* q, const float* k, const float* v, float* out) {
  if (t == 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const dim3 grid(static_cast<unsigned>(t), static_cast<unsigned>(heads));
  LRK_LAUNCH(attention_kernel, grid, kThreads, f32_bytes(q0 + t))(q0, heads, heads / kv_heads, head_dim, scale, window,
                                                                  key_start, q, k, v, out);
}

void attention_backward_dev(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                            const int64_t* doc_start, const float* q, const float* k, const float* v,
                            const float* dout, float* dq, float* dk, float* dv, float* P, float* dS, int64_t chunk) {
  if (T == 0) return;
  const int64_t qd = heads * head_dim, kvd = kv_heads * head_dim, hd = head_dim, group = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  if (chunk < 1 || chunk > heads) chunk = heads;
  for (int64_t h0 = 0; h0 < heads; h0 += chunk) {  // P and dS of `chunk` heads at a time
    const int64_t hn = std::min(chunk, heads - h0);
    const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(hn));
    LRK_LAUNCH(attention_ds_kernel, grid, kThreads, 0)(T, heads, group, hd, scale, window, doc_start, q, k, v, dout, P,
                                                       dS, h0);
    for (int64_t h = h0; h < h0 + hn; h++) {  // head order: the dK/dV sums of a group are deterministic
      const int64_t ko = (h / group) * hd, qo = h * hd;
      const float* Ph = P + (h - h0) * T * T;
      const float* dSh = dS + (h - h0) * T * T;
      const float beta = h % group == 0 ? 0.0f : 1.0f;  // the group's first head overwrites dK/dV
      gemm(false, false, T, hd, T, scale, dSh, T, k + ko, kvd, 0.0f, dq + qo, qd);
      gemm(true, false, T, hd, T, scale, dSh, T, q + qo, qd, beta, dk + ko, kvd);
      gemm(true, false, T, hd, T, 1.0f, Ph, T, dout + qo, qd, beta, dv + ko, kvd);
    }
  }
}

}  // namespace lowrank::cuda

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
  attention_forward_dev(T, heads, kv_heads, head_dim, 0, nullptr, dq.as<float>(), dk.as<float>(), dv.as<float>(),
                        dout.as<float>());
  LRK_CUDA_SYNC("attention kernel");
  return dout.to_host(out, f32_bytes(T * qd));
}

extern "C" lrk_status lrk_cuda_attention_backward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                                  const float* q, const float* k, const float* v, const float* dout,
                                                  float* dq, float* dk, float* dv) {
  if (T < 0 || heads < 1 || kv_heads < 1 || heads % kv_heads || head_dim < 1)
    return fail(LRK_INVALID_ARGUMENT, "attention_backward: heads must be a multiple of kv_heads >= 1");
  if (T == 0) return LRK_OK;
  const int64_t qd = heads * head_dim, kvd = kv_heads * head_dim;
  DeviceBuffer bq, bk, bv, bdo, bP, bdS, bdq, bdk, bdv;
  if (lrk_status s = bq.alloc(f32_bytes(T * qd), q)) return s;
  if (lrk_status s = bk.alloc(f32_bytes(T * kvd), k)) return s;
  if (lrk_status s = bv.alloc(f32_bytes(T * kvd), v)) return s;
  if (lrk_status s = bdo.alloc(f32_bytes(T * qd), dout)) return s;
  if (lrk_status s = bP.alloc(f32_bytes(heads * T * T))) return s;  // O(H·T²): the engine's att buffer too
  if (lrk_status s = bdS.alloc(f32_bytes(heads * T * T))) return s;
  if (lrk_status s = bdq.alloc(f32_bytes(T * qd))) return s;
  if (lrk_status s = bdk.alloc(f32_bytes(T * kvd))) return s;
  if (lrk_status s = bdv.alloc(f32_bytes(T * kvd))) return s;
  attention_backward_dev(T, heads, kv_heads, head_dim, 0, nullptr, bq.as<float>(), bk.as<float>(), bv.as<float>(),
                         bdo.as<float>(), bdq.as<float>(), bdk.as<float>(), bdv.as<float>(), bP.as<float>(),
                         bdS.as<float>());
  LRK_CUDA_SYNC("attention_backward kernels");
  if (lrk_status s = bdq.to_host(dq, f32_bytes(T * qd))) return s;
  if (lrk_status s = bdk.to_host(dk, f32_bytes(T * kvd))) return s;
  return bdv.to_host(dv, f32_bytes(T * kvd));
}
