// The CPU backend's ops (lrk_cpu_*, backend_ops.h), one file each in src/cpu/, and the
// thread-local error message they share. No exception crosses the C boundary: guard()
// turns one into a status.
#pragma once
#include <exception>
#include <new>
#include <string>

#include "lowrank/backend_ops.h"

namespace lowrank::cpu {

std::string& last_error_slot();

inline lrk_status fail(lrk_status s, const std::string& msg) {
  last_error_slot() = msg;
  return s;
}

/** Runs fn (returning lrk_status); a thrown error becomes LRK_INVALID_ARGUMENT with its message. */
template <typename F>
lrk_status guard(F&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return fail(LRK_INVALID_ARGUMENT, "out of host memory");
  } catch (const std::exception& e) {
    return fail(LRK_INVALID_ARGUMENT, e.what());
  }
}

}  // namespace lowrank::cpu

extern "C" {
lrk_status lrk_cpu_lora_forward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* y, float* h);
lrk_status lrk_cpu_lora_backward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                 const float* h, const float* dy, const void* w, lrk_dtype w_dtype, const float* a,
                                 const float* b, float* dx, float* ga, float* gb);
lrk_status lrk_cpu_adamw(int64_t n, float* p, const float* g, float* m, float* v, double lr, double beta1, double beta2,
                         double eps, double weight_decay, int64_t t);
lrk_status lrk_cpu_rmsnorm_forward(int64_t n, int64_t d, double eps, const float* x, const float* w, float* y,
                                   float* rstd);
lrk_status lrk_cpu_rope_apply(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* pos,
                              int64_t npos, const float* cos, const float* sin, int inverse);
lrk_status lrk_cpu_swiglu_forward(int64_t n, const float* gate, const float* up, float* act);
lrk_status lrk_cpu_attention_forward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q,
                                     const float* k, const float* v, float* out);
lrk_status lrk_cpu_factor_sum(int64_t count, const int64_t* ranks, int64_t out, int64_t in, const float* const* b,
                              const float* const* a, const float* weight, float* delta);
lrk_status lrk_cpu_rmsnorm_backward(int64_t n, int64_t d, const float* x, const float* w, const float* rstd,
                                    const float* dy, float* dx, int accumulate);
lrk_status lrk_cpu_swiglu_backward(int64_t n, const float* gate, const float* up, const float* dact, float* dgate,
                                   float* dup);
lrk_status lrk_cpu_cross_entropy(int64_t n, int64_t vocab, const float* logits, const int32_t* labels, float scale,
                                 float* loss, float* dlogits);
lrk_status lrk_cpu_dropout_mask(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p, float* mask);
lrk_status lrk_cpu_attention_backward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q,
                                      const float* k, const float* v, const float* dout, float* dq, float* dk, float* dv);
const char* lrk_cpu_last_error(void);
}
