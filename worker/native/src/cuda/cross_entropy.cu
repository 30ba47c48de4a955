// Causal-LM cross-entropy on the GPU, the CPU op's fused loss and softmax backward: one
// block per row; the max and Σexp (in double) by fixed-shape trees, so a row's result
// does not depend on timing; vocab-sized rows are walked with a block stride. dlogits may
// be logits (in place: the device engine's chunked loss): every read of a row comes before
// the block's last barrier, every write after it.
#include <cmath>

#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"

namespace {

constexpr int kThreads = 256;

__global__ void cross_entropy_kernel(int64_t vocab, const float* logits, const int32_t* labels, float scale,
                                     float* loss, float* dlogits) {
  __shared__ float fred[kThreads];
  __shared__ double dred[kThreads];
  const int64_t row = blockIdx.x;
  const float* z = logits + row * vocab;
  float* g = dlogits + row * vocab;
  const int32_t label = labels[row];
  const float z_label = label == -100 ? 0.0f : z[label];  // read before any thread writes g
  if (label == -100) {  // uniform across the block: no thread reaches a barrier alone
    for (int64_t j = threadIdx.x; j < vocab; j += kThreads) g[j] = 0.0f;
    if (threadIdx.x == 0) loss[row] = 0.0f;
    return;
  }
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) mx = fmaxf(mx, z[j]);
  fred[threadIdx.x] = mx;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) fred[threadIdx.x] = fmaxf(fred[threadIdx.x], fred[threadIdx.x + s]);
    __syncthreads();
  }
  mx = fred[0];
  double sum = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) sum += static_cast<double>(expf(z[j] - mx));
  dred[threadIdx.x] = sum;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) dred[threadIdx.x] += dred[threadIdx.x + s];
    __syncthreads();
  }
  const auto lse = static_cast<float>(log(dred[0]) + mx);
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    const float v = __fmul_rn(expf(z[j] - lse), scale);
    g[j] = j == label ? __fsub_rn(v, scale) : v;
  }
  if (threadIdx.x == 0) loss[row] = lse - z_label;
}

}  // namespace

namespace lowrank::cuda {

void cross_entropy_dev(int64_t n, int64_t vocab, const float* logits, const int32_t* labels, float scale, float* loss,
                       float* dlogits) {
  if (n > 0)
    LRK_LAUNCH(cross_entropy_kernel, static_cast<unsigned>(n), kThreads, 0)(vocab, logits, labels, scale, loss, dlogits);
}

}  // namespace lowrank::cuda

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_cross_entropy(int64_t n, int64_t vocab, const float* logits, const int32_t* labels,
                                             float scale, float* loss, float* dlogits) {
  if (n < 0 || vocab < 1) return fail(LRK_INVALID_ARGUMENT, "cross_entropy: n >= 0, vocab >= 1");
  for (int64_t i = 0; i < n; i++)
    if (labels[i] != -100 && (labels[i] < 0 || labels[i] >= vocab))
      return fail(LRK_INVALID_ARGUMENT, "cross_entropy: a label is outside [0, vocab) and not -100");
  if (n == 0) return LRK_OK;
  DeviceBuffer bz, by, bl, bg;
  if (lrk_status s = bz.alloc(f32_bytes(n * vocab), logits)) return s;
  if (lrk_status s = by.alloc(static_cast<size_t>(n) * sizeof(int32_t), labels)) return s;
  if (lrk_status s = bl.alloc(f32_bytes(n))) return s;
  if (lrk_status s = bg.alloc(f32_bytes(n * vocab))) return s;
  cross_entropy_dev(n, vocab, bz.as<float>(), by.as<int32_t>(), scale, bl.as<float>(), bg.as<float>());
  LRK_CUDA_SYNC("cross_entropy kernel");
  if (lrk_status s = bl.to_host(loss, f32_bytes(n))) return s;
  return bg.to_host(dlogits, f32_bytes(n * vocab));
}
