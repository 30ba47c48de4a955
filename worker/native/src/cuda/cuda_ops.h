// The CUDA backend's ops (lrk_cuda_*, the signatures of backend_ops.h), one file each in
// src/cuda/; ops_table.cu gathers them into the table liblowrank_cuda.so exports.
#pragma once
#include "lowrank/backend_ops.h"

extern "C" {
LRK_API lrk_status lrk_cuda_lora_forward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                 const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* y, float* h);
LRK_API lrk_status lrk_cuda_lora_backward(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                                  const float* h, const float* dy, const void* w, lrk_dtype w_dtype, const float* a,
                                  const float* b, float* dx, float* ga, float* gb);
LRK_API lrk_status lrk_cuda_adamw(int64_t n, float* p, const float* g, float* m, float* v, double lr, double beta1,
                          double beta2, double eps, double weight_decay, int64_t t);
LRK_API lrk_status lrk_cuda_rmsnorm_forward(int64_t n, int64_t d, double eps, const float* x, const float* w, float* y,
                                    float* rstd);
LRK_API lrk_status lrk_cuda_rope_apply(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* pos,
                               int64_t npos, const float* cos, const float* sin, int inverse);
LRK_API lrk_status lrk_cuda_swiglu_forward(int64_t n, const float* gate, const float* up, float* act);
LRK_API lrk_status lrk_cuda_attention_forward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q,
                                      const float* k, const float* v, float* out);
LRK_API lrk_status lrk_cuda_factor_sum(int64_t count, const int64_t* ranks, int64_t out, int64_t in, const float* const* b,
                               const float* const* a, const float* weight, float* delta);
LRK_API lrk_status lrk_cuda_rmsnorm_backward(int64_t n, int64_t d, const float* x, const float* w, const float* rstd,
                                    const float* dy, float* dx, int accumulate);
LRK_API lrk_status lrk_cuda_swiglu_backward(int64_t n, const float* gate, const float* up, const float* dact, float* dgate,
                                   float* dup);
LRK_API lrk_status lrk_cuda_cross_entropy(int64_t n, int64_t vocab, const float* logits, const int32_t* labels, float scale,
                                 float* loss, float* dlogits);
LRK_API lrk_status lrk_cuda_dropout_mask(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p, float* mask);
LRK_API lrk_status lrk_cuda_attention_backward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q,
                                      const float* k, const float* v, const float* dout, float* dq, float* dk, float* dv);
LRK_API const char* lrk_cuda_last_error(void);
}
