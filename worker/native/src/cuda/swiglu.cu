// SwiGLU on the GPU, forward (act = silu(gate) ⊙ up) and backward, with the accurate
// expf (not __expf).
#include "common.cuh"
#include "cuda_ops.h"
#include "device_ops.cuh"

namespace {

__global__ void swiglu_kernel(int64_t n, const float* gate, const float* up, float* act) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  act[i] = __fmul_rn(__fmul_rn(g, __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g)))), up[i]);
}

__global__ void swiglu_backward_kernel(int64_t n, const float* gate, const float* up, const float* dact, float* dgate,
                                       float* dup) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i], sg = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g))), da = dact[i];
  dup[i] = __fmul_rn(__fmul_rn(da, g), sg);
  dgate[i] = __fmul_rn(__fmul_rn(__fmul_rn(da, up[i]), sg), __fadd_rn(1.0f, __fmul_rn(g, __fsub_rn(1.0f, sg))));
}

}  // namespace

namespace lowrank::cuda {

void swiglu_forward_dev(int64_t n, const float* gate, const float* up, float* act) {
  if (n > 0) LRK_LAUNCH(swiglu_kernel, static_cast<unsigned>((n + 255) / 256), 256, 0)(n, gate, up, act);
}

void swiglu_backward_dev(int64_t n, const float* gate, const float* up, const float* dact, float* dgate, float* dup) {
  if (n > 0)
    LRK_LAUNCH(swiglu_backward_kernel, static_cast<unsigned>((n + 255) / 256), 256, 0)(n, gate, up, dact, dgate, dup);
}

}  // namespace lowrank::cuda

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_swiglu_forward(int64_t n, const float* gate, const float* up, float* act) {
  if (n < 0) return fail(LRK_INVALID_ARGUMENT, "swiglu: n >= 0");
  if (n == 0) return LRK_OK;
  DeviceBuffer dg, du, da;
  if (lrk_status s = dg.alloc(f32_bytes(n), gate)) return s;
  if (lrk_status s = du.alloc(f32_bytes(n), up)) return s;
  if (lrk_status s = da.alloc(f32_bytes(n))) return s;
  swiglu_forward_dev(n, dg.as<float>(), du.as<float>(), da.as<float>());
  LRK_CUDA_SYNC("swiglu kernel");
  return da.to_host(act, f32_bytes(n));
}

extern "C" lrk_status lrk_cuda_swiglu_backward(int64_t n, const float* gate, const float* up, const float* dact,
                                               float* dgate, float* dup) {
  if (n < 0) return fail(LRK_INVALID_ARGUMENT, "swiglu_backward: n >= 0");
  if (n == 0) return LRK_OK;
  DeviceBuffer bg, bu, bd, bdg, bdu;
  if (lrk_status s = bg.alloc(f32_bytes(n), gate)) return s;
  if (lrk_status s = bu.alloc(f32_bytes(n), up)) return s;
  if (lrk_status s = bd.alloc(f32_bytes(n), dact)) return s;
  if (lrk_status s = bdg.alloc(f32_bytes(n))) return s;
  if (lrk_status s = bdu.alloc(f32_bytes(n))) return s;
  swiglu_backward_dev(n, bg.as<float>(), bu.as<float>(), bd.as<float>(), bdg.as<float>(), bdu.as<float>());
  LRK_CUDA_SYNC("swiglu_backward kernel");
  if (lrk_status s = bdg.to_host(dgate, f32_bytes(n))) return s;
  return bdu.to_host(dup, f32_bytes(n));
}
