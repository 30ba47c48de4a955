// The fused LoRA linear on the GPU (METHODS §1.1, P1), the CPU op's math:
//   forward  h = x Aᵀ;            y  = x Wᵀ + s·h Bᵀ        (one fused kernel for y)
//   backward g = dy B;            dx = dy W + s·g A         (one fused kernel for dx)
//            gb += s dyᵀ h;        ga += s gᵀ x
// W stays in its dtype on the device (bf16 halves the dominant transfer and memory) and is
// widened in the GEMM's shared-memory staging; every sum is fp32.
#include "cuda_ops.h"
#include "device_ops.cuh"
#include "gemm.cuh"

namespace lowrank::cuda {
namespace {

lrk_status check_args(int64_t n, int64_t in, int64_t out, int64_t r, const void* w, lrk_dtype dt, const float* a,
                      const float* b) {
  if (n < 0 || in < 1 || out < 1 || r < 0) return fail(LRK_INVALID_ARGUMENT, "lora: n >= 0, in >= 1, out >= 1, r >= 0");
  if (!w) return fail(LRK_INVALID_ARGUMENT, "lora: W is null");
  if (dt != LRK_F32 && dt != LRK_BF16) return fail(LRK_INVALID_ARGUMENT, "lora: W dtype must be f32 or bf16");
  if (r > 0 && (!a || !b)) return fail(LRK_INVALID_ARGUMENT, "lora: A and B are required when r > 0");
  return LRK_OK;
}

size_t weight_bytes(int64_t count, lrk_dtype dt) {
  return static_cast<size_t>(count) * (dt == LRK_BF16 ? sizeof(__nv_bfloat16) : sizeof(float));
}

// C = α1 op(X) op(W) + α2 op(A2) op(B2) + β C with W in either dtype.
void gemm_w(lrk_dtype dt, int64_t m, int64_t n, bool ta, bool tb, int64_t k, const float* x, int64_t ldx,
            const void* w, int64_t ldw, const GemmPair<float>& p2, float beta, float* c, int64_t ldc) {
  if (dt == LRK_BF16) {
    gemm2<__nv_bfloat16>(m, n, {ta, tb, k, 1.0f, x, ldx, static_cast<const __nv_bfloat16*>(w), ldw}, p2, beta, c, ldc);
  } else {
    gemm2<float>(m, n, {ta, tb, k, 1.0f, x, ldx, static_cast<const float*>(w), ldw}, p2, beta, c, ldc);
  }
}

}  // namespace

// Mask-multiply-accumulate: dx[i] += t[i] · mask[i] (the dropout branch of the backward).
__global__ void masked_add_kernel(int64_t n, const float* t, const float* mask, float* dx) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dx[i] = __fadd_rn(dx[i], __fmul_rn(t[i], mask[i]));
}

void lora_forward_dev(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x, const float* xa,
                      const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* y, float* h) {
  if (n == 0) return;
  GemmPair<float> adapter;  // k = 0: plain linear
  if (r > 0) {
    gemm(false, true, n, r, in, 1.0f, xa ? xa : x, in, a, in, 0.0f, h, r);
    adapter = {false, true, r, scale, h, r, b, r};
  }
  gemm_w(w_dtype, n, out, false, true, in, x, in, w, in, adapter, 0.0f, y, out);
}

void lora_backward_dev(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* xa, const float* h,
                       const float* dy, const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* dx,
                       bool dx_accumulate, const float* mask, float* g, float* tmp, float* ga, float* gb) {
  if (n == 0) return;
  GemmPair<float> adapter;
  if (r > 0) {
    gemm(false, false, n, r, out, 1.0f, dy, out, b, r, 0.0f, g, r);
    gemm(true, false, out, r, n, scale, dy, out, h, r, 1.0f, gb, r);
    gemm(true, false, r, in, n, scale, g, r, xa, in, 1.0f, ga, in);
    if (!mask) adapter = {false, false, r, scale, g, r, a, in};
  }
  if (!dx) return;
  gemm_w(w_dtype, n, in, false, false, out, dy, out, w, in, adapter, dx_accumulate ? 1.0f : 0.0f, dx, in);
  if (r > 0 && mask) {  // dx += D ⊙ (s g A)
    gemm(false, false, n, in, r, scale, g, r, a, in, 0.0f, tmp, in);
    masked_add_dev(n * in, tmp, mask, dx);
  }
}

void masked_add_dev(int64_t n, const float* t, const float* mask, float* dx) {
  if (n > 0) LRK_LAUNCH(masked_add_kernel, static_cast<unsigned>((n + 255) / 256), 256, 0)(n, t, mask, dx);
}

}  // namespace lowrank::cuda

using namespace lowrank::cuda;

extern "C" lrk_status lrk_cuda_lora_forward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                            const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* y,
                                            float* h) {
  if (lrk_status s = check_args(n, in, out, r, w, w_dtype, a, b)) return s;
  if (n == 0) return LRK_OK;
  DeviceBuffer dx, dw, da, db, dy, dh;
  if (lrk_status s = dx.alloc(f32_bytes(n * in), x)) return s;
  if (lrk_status s = dw.alloc(weight_bytes(out * in, w_dtype), w)) return s;
  if (lrk_status s = dy.alloc(f32_bytes(n * out))) return s;
  if (r > 0) {
    if (lrk_status s = da.alloc(f32_bytes(r * in), a)) return s;
    if (lrk_status s = db.alloc(f32_bytes(out * r), b)) return s;
    if (lrk_status s = dh.alloc(f32_bytes(n * r))) return s;
  }
  lora_forward_dev(n, in, out, r, scale, dx.as<float>(), nullptr, dw.as<void>(), w_dtype, da.as<float>(),
                   db.as<float>(), dy.as<float>(), dh.as<float>());
  LRK_CUDA_SYNC("lora_forward kernels");
  if (lrk_status s = dy.to_host(y, f32_bytes(n * out))) return s;
  if (r > 0) return dh.to_host(h, f32_bytes(n * r));
  return LRK_OK;
}

extern "C" lrk_status lrk_cuda_lora_backward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                             const float* h, const float* dy, const void* w, lrk_dtype w_dtype,
                                             const float* a, const float* b, float* dx, float* ga, float* gb) {
  if (lrk_status s = check_args(n, in, out, r, w, w_dtype, a, b)) return s;
  if (n == 0) return LRK_OK;
  DeviceBuffer d_dy, d_w, d_x, d_h, d_a, d_b, d_g, d_dx, d_ga, d_gb;
  if (lrk_status s = d_dy.alloc(f32_bytes(n * out), dy)) return s;
  if (r > 0) {
    if (lrk_status s = d_x.alloc(f32_bytes(n * in), x)) return s;
    if (lrk_status s = d_h.alloc(f32_bytes(n * r), h)) return s;
    if (lrk_status s = d_a.alloc(f32_bytes(r * in), a)) return s;
    if (lrk_status s = d_b.alloc(f32_bytes(out * r), b)) return s;
    if (lrk_status s = d_g.alloc(f32_bytes(n * r))) return s;
    if (lrk_status s = d_ga.alloc(f32_bytes(r * in), ga)) return s;
    if (lrk_status s = d_gb.alloc(f32_bytes(out * r), gb)) return s;
  }
  if (dx) {
    if (lrk_status s = d_w.alloc(weight_bytes(out * in, w_dtype), w)) return s;
    if (lrk_status s = d_dx.alloc(f32_bytes(n * in))) return s;
  }
  lora_backward_dev(n, in, out, r, scale, d_x.as<float>(), d_h.as<float>(), d_dy.as<float>(),
                    dx ? d_w.as<void>() : nullptr, w_dtype, d_a.as<float>(), d_b.as<float>(),
                    dx ? d_dx.as<float>() : nullptr, false, nullptr, d_g.as<float>(), nullptr, d_ga.as<float>(),
                    d_gb.as<float>());
  LRK_CUDA_SYNC("lora_backward kernels");
  if (dx)
    if (lrk_status s = d_dx.to_host(dx, f32_bytes(n * in))) return s;
  if (r == 0) return LRK_OK;
  if (lrk_status s = d_ga.to_host(ga, f32_bytes(r * in))) return s;
  return d_gb.to_host(gb, f32_bytes(out * r));
}
