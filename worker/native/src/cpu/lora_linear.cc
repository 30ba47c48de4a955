// The LoRA linear on the CPU (METHODS §1.1, P1): y = x Wᵀ + s·(x Aᵀ) Bᵀ and its backward,
// the engine's linear_forward/linear_backward without DoRA or dropout. A bf16 W is widened
// to fp32 once per call (exact), so both dtypes share one fp32 GEMM path.
#include <cstring>
#include <vector>

#include "cpu_ops.h"
#include "lowrank/linalg.h"

namespace {

lrk_status check(int64_t n, int64_t in, int64_t out, int64_t r, const void* w, lrk_dtype dt, const float* a,
                 const float* b) {
  using lowrank::cpu::fail;
  if (n < 0 || in < 1 || out < 1 || r < 0) return fail(LRK_INVALID_ARGUMENT, "lora: n >= 0, in >= 1, out >= 1, r >= 0");
  if (!w) return fail(LRK_INVALID_ARGUMENT, "lora: W is null");
  if (dt != LRK_F32 && dt != LRK_BF16) return fail(LRK_INVALID_ARGUMENT, "lora: W dtype must be f32 or bf16");
  if (r > 0 && (!a || !b)) return fail(LRK_INVALID_ARGUMENT, "lora: A and B are required when r > 0");
  return LRK_OK;
}

// W as fp32: the caller's buffer, or a widened copy of the bf16 bits.
const float* weight_f32(const void* w, lrk_dtype dt, int64_t count, std::vector<float>* tmp) {
  if (dt == LRK_F32) return static_cast<const float*>(w);
  tmp->resize(static_cast<size_t>(count));
  const auto* bits = static_cast<const uint16_t*>(w);
  for (int64_t i = 0; i < count; i++) {
    const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(&(*tmp)[static_cast<size_t>(i)], &u, sizeof u);
  }
  return tmp->data();
}

}  // namespace

extern "C" lrk_status lrk_cpu_lora_forward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                           const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* y,
                                           float* h) {
  return lowrank::cpu::guard([&] {
    if (lrk_status s = check(n, in, out, r, w, w_dtype, a, b)) return s;
    if (n == 0) return LRK_OK;
    std::vector<float> tmp;
    const float* W = weight_f32(w, w_dtype, out * in, &tmp);
    lowrank::gemm(false, true, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    if (r > 0) {
      lowrank::gemm(false, true, n, r, in, 1.0f, x, in, a, in, 0.0f, h, r);
      lowrank::gemm(false, true, n, out, r, scale, h, r, b, r, 1.0f, y, out);
    }
    return LRK_OK;
  });
}

extern "C" lrk_status lrk_cpu_lora_backward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                            const float* h, const float* dy, const void* w, lrk_dtype w_dtype,
                                            const float* a, const float* b, float* dx, float* ga, float* gb) {
  return lowrank::cpu::guard([&] {
    if (lrk_status s = check(n, in, out, r, w, w_dtype, a, b)) return s;
    if (n == 0) return LRK_OK;
    std::vector<float> tmp;
    const float* W = weight_f32(w, w_dtype, out * in, &tmp);
    if (dx) lowrank::gemm(false, false, n, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
    if (r == 0) return LRK_OK;
    std::vector<float> g(static_cast<size_t>(n * r));  // dy B [n, r]
    lowrank::gemm(false, false, n, r, out, 1.0f, dy, out, b, r, 0.0f, g.data(), r);
    if (dx) lowrank::gemm(false, false, n, in, r, scale, g.data(), r, a, in, 1.0f, dx, in);
    lowrank::gemm(true, false, out, r, n, scale, dy, out, h, r, 1.0f, gb, r);
    lowrank::gemm(true, false, r, in, n, scale, g.data(), r, x, in, 1.0f, ga, in);
    return LRK_OK;
  });
}
