// The device-pointer entry points of the CUDA kernels: every pointer is device memory,
// every call only launches on the default stream (no allocation, no copy, no sync; errors
// surface at the caller's LRK_CUDA_SYNC). The host-staging ops of backend_ops.h and the
// device-resident training engine (device_engine.cu) are both built on these.
#pragma once
#include "common.cuh"

namespace lowrank::cuda {

/** y = x Wᵀ + s·(xa Aᵀ) Bᵀ, h = xa Aᵀ (xa: the adapter's input, x or its dropout). r = 0: y = x Wᵀ. */
void lora_forward_dev(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x, const float* xa,
                      const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* y, float* h);

/**
 * gb += s dyᵀ h; ga += s gᵀ xa with g = dy B (scratch [n, r]); dx (+)= dy W + s g A, the
 * adapter term masked by `mask` [n, in] when given (dropout; then `tmp` [n, in] is scratch).
 * dx may be null (no input gradient); r = 0: dx (+)= dy W only.
 */
void lora_backward_dev(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* xa, const float* h,
                       const float* dy, const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* dx,
                       bool dx_accumulate, const float* mask, float* g, float* tmp, float* ga, float* gb);

/** dx[i] += t[i] · mask[i] (the dropout branch of a backward). */
void masked_add_dev(int64_t n, const float* t, const float* mask, float* dx);

void adamw_dev(int64_t n, float* p, const float* g, float* m, float* v, double lr, double beta1, double beta2,
               double eps, double weight_decay, int64_t t);

void rmsnorm_forward_dev(int64_t n, int64_t d, double eps, const float* x, const float* w, float* y, float* rstd);
void rmsnorm_backward_dev(int64_t n, int64_t d, const float* x, const float* w, const float* rstd, const float* dy,
                          float* dx, int accumulate);

void rope_apply_dev(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* pos,
                    const float* cos, const float* sin, int inverse);

void swiglu_forward_dev(int64_t n, const float* gate, const float* up, float* act);
void swiglu_backward_dev(int64_t n, const float* gate, const float* up, const float* dact, float* dgate, float* dup);

/**
 * Attention of one sequence. Query i attends keys j in [lo_i, i], lo_i = max(i − window + 1
 * when window > 0, doc_start[i] when doc_start is given): causal, sliding-window and packed
 * documents as the CPU engine's causal_softmax.
 */
void attention_forward_dev(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                           const int64_t* doc_start, const float* q, const float* k, const float* v, float* out);
/**
 * t new queries at positions q0 .. q0 + t − 1 against keys/values [q0 + t, kv_dim] (a KV
 * cache): query r sees keys max(key_start[r], window start) .. q0 + r. q0 + t ≤ 8192.
 */
void attention_cached_dev(int64_t t, int64_t q0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                          const int64_t* key_start, const float* q, const float* k, const float* v, float* out);
/**
 * P and dS: scratch [chunk, T, T], the heads processed `chunk` at a time (≤ 0: all at once;
 * the same results for any chunk); dk and dv are overwritten.
 */
void attention_backward_dev(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                            const int64_t* doc_start, const float* q, const float* k, const float* v,
                            const float* dout, float* dq, float* dk, float* dv, float* P, float* dS,
                            int64_t chunk = 0);

/** Labels must already be valid (in [0, vocab) or −100). */
void cross_entropy_dev(int64_t n, int64_t vocab, const float* logits, const int32_t* labels, float scale, float* loss,
                       float* dlogits);

void dropout_mask_dev(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p, float* mask);

}  // namespace lowrank::cuda

// The device engine's small elementwise kernels (engine_kernels.cu).
namespace lowrank::cuda {

/** out [n, d] = rows tokens[i] of the embedding [vocab, d] (f32 or bf16, widened). */
void embed_gather_dev(int64_t n, int64_t d, const int32_t* tokens, const void* embed, lrk_dtype dtype, float* out);
/** out = a + b, elementwise (out may alias a). */
void add_dev(int64_t n, const float* a, const float* b, float* out);
/** out = a ⊙ b, elementwise. */
void mul_dev(int64_t n, const float* a, const float* b, float* out);
/** y [n, out] += bias [out] per row. */
void bias_add_dev(int64_t n, int64_t out, const float* bias, float* y);
/** dst = src. */
void copy_dev(int64_t n, const float* src, float* dst);
/** dst [rows · ld_rows, width]: rows b, t rows from src [rows · t, width] at row b·ld_rows + offset (a KV cache store). */
void rows_store_dev(int64_t rows, int64_t t, int64_t width, int64_t ld_rows, int64_t offset, const float* src, float* dst);
/** dst [rows, width] = the last of each row's t rows of src [rows · t, width]. */
void rows_last_dev(int64_t rows, int64_t t, int64_t width, const float* src, float* dst);
/** x *= c. */
void scale_dev(int64_t n, float c, float* x);
/** sums[t] = Σ x² over x[offsets[t] .. offsets[t] + sizes[t]), in double (one block per tensor, fixed tree). */
void sum_squares_dev(int64_t tensors, const int64_t* offsets, const int64_t* sizes, const float* x, double* sums);

}  // namespace lowrank::cuda

// DoRA (dora.cu).
namespace lowrank::cuda {

/** norm [out] = ‖W + s·BA‖ per output row (BA formed in `ba` [out, in], as PEFT's get_weight_norm). */
void dora_norm_dev(int64_t out, int64_t in, const void* w, lrk_dtype w_dtype, float scale, const float* a,
                   const float* b, int64_t r, float* ba, float* norm);
/** y = z ⊙ (m/n) per output column (y may be z: the backward's dy ⊙ (m/n) too). */
void dora_scale_dev(int64_t n, int64_t out, const float* z, const float* m, const float* norm, float* y);
/** gm [out] += Σ_i dy ⊙ z / n, tokens summed in order in double. */
void dora_grad_m_dev(int64_t n, int64_t out, const float* dy, const float* z, const float* norm, float* gm);
/** With dropout (PEFT's W·drop(x) path), g = m/n: y = (y + (g − 1) ⊙ wxd) + g ⊙ (z − wxd), wxd = W x̃. */
void dora_dropout_combine_dev(int64_t n, int64_t out, const float* wxd, const float* z, const float* m,
                              const float* norm, float* y);
/** With dropout: dyg = dy ⊙ g and dyg1 = dy ⊙ (g − 1), g = m/n. */
void dora_dropout_dy_dev(int64_t n, int64_t out, const float* dy, const float* m, const float* norm, float* dyg,
                         float* dyg1);

}  // namespace lowrank::cuda
