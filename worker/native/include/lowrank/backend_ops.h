/*
 * The flat C API shared by the CPU and CUDA backends (METHODS §7: P1 fused LoRA GEMM,
 * P16 RMSNorm/RoPE/SwiGLU/attention/AdamW, the weighted factor sum of the merges).
 *
 * Every op exists twice with this exact signature: lrk_cpu_<op> in the core
 * (src/cpu/, plain loops + OpenBLAS, the math of the training engine) and lrk_cuda_<op>
 * in liblowrank_cuda.so (src/cuda/), which the addon dlopen()s at run time so that the
 * addon never links the CUDA runtime. Buffers are host memory, row-major, caller-owned;
 * the CUDA side stages them through device memory. A status is returned, never thrown;
 * lrk_<backend>_last_error() gives the thread's message for the last failure.
 */
#ifndef LOWRANK_BACKEND_OPS_H_
#define LOWRANK_BACKEND_OPS_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from liblowrank_cuda.so, which is built with hidden visibility otherwise. */
#define LRK_API __attribute__((visibility("default")))

typedef enum {
  LRK_OK = 0,
  LRK_INVALID_ARGUMENT = 1, /* a shape or pointer is wrong; the message names it */
  LRK_DEVICE_ERROR = 2,     /* a CUDA call failed (no device, out of memory, launch) */
} lrk_status;

/* The dtype of a frozen weight W: fp32, or bf16 (raw bits) widened to fp32 in the GEMM. */
typedef enum { LRK_F32 = 0, LRK_BF16 = 1 } lrk_dtype;

/* Bumped whenever a signature below changes; the addon refuses a library of another version. */
#define LRK_BACKEND_ABI 1

/*
 * The ops, as a table of function pointers (one per backend). Shapes in the comments;
 * the math of each is the training engine's (src/train), which the CPU half implements.
 */
typedef struct {
  /* y [n, out] = x [n, in] Wᵀ + s·(x Aᵀ) Bᵀ; h [n, r] = x Aᵀ (kept for the backward).
     W [out, in] in w_dtype, A [r, in], B [out, r]; r = 0: plain linear (h unused). */
  lrk_status (*lora_forward)(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                             const void* w, lrk_dtype w_dtype, const float* a, const float* b, float* y, float* h);
  /* dx [n, in] = dy W + s (dy B) A; gb [out, r] += s dyᵀ h; ga [r, in] += s (dy B)ᵀ x.
     dx may be NULL (no input gradient). */
  lrk_status (*lora_backward)(int64_t n, int64_t in, int64_t out, int64_t r, float scale, const float* x,
                              const float* h, const float* dy, const void* w, lrk_dtype w_dtype, const float* a,
                              const float* b, float* dx, float* ga, float* gb);
  /* torch.optim.AdamW (single-tensor path, fp32) on n parameters, step t >= 1. */
  lrk_status (*adamw)(int64_t n, float* p, const float* g, float* m, float* v, double lr, double beta1, double beta2,
                      double eps, double weight_decay, int64_t t);
  /* y [n, d] = w ⊙ x·rstd, rstd [n] = (mean(x²) + eps)^-½ (LlamaRMSNorm, fp32). */
  lrk_status (*rmsnorm_forward)(int64_t n, int64_t d, double eps, const float* x, const float* w, float* y,
                                float* rstd);
  /* In place on x [n, ld] (heads·head_dim used per row): row i at position pos[i] of the
     tables cos/sin [npos, head_dim/2]; inverse = 1 rotates back (the backward). */
  lrk_status (*rope_apply)(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* pos,
                           int64_t npos, const float* cos, const float* sin, int inverse);
  /* act [n] = silu(gate) ⊙ up. */
  lrk_status (*swiglu_forward)(int64_t n, const float* gate, const float* up, float* act);
  /* Causal GQA attention of one sequence: q [T, H·hd], k/v [T, KVH·hd] -> out [T, H·hd],
     softmax(q kᵀ / √hd) over keys j <= i, probabilities in fp32. */
  lrk_status (*attention_forward)(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q,
                                  const float* k, const float* v, float* out);
  /* delta [out, in] = Σ_i weight[i] · B_i A_i with B_i [out, r_i], A_i [r_i, in]: the
     weighted sum of factor products of PEFT's `linear`/`cat` merges (METHODS §2.2). */
  lrk_status (*factor_sum)(int64_t count, const int64_t* ranks, int64_t out, int64_t in, const float* const* b,
                           const float* const* a, const float* weight, float* delta);
  /* dx [n, d] (+)= rstd·(w⊙dy) − x·rstd³/d·Σ(w⊙dy⊙x) (accumulate = 1 adds). */
  lrk_status (*rmsnorm_backward)(int64_t n, int64_t d, const float* x, const float* w, const float* rstd,
                                 const float* dy, float* dx, int accumulate);
  /* dgate = dact ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))), dup = dact ⊙ silu(g). */
  lrk_status (*swiglu_backward)(int64_t n, const float* gate, const float* up, const float* dact, float* dgate,
                                float* dup);
  /* Per row of logits [n, vocab]: loss[i] = logsumexp − z[label] and dlogits = scale·(softmax −
     onehot); label −100: loss 0 and a zero gradient row. */
  lrk_status (*cross_entropy)(int64_t n, int64_t vocab, const float* logits, const int32_t* labels, float scale,
                              float* loss, float* dlogits);
  /* LoRA dropout mask (P10): mask[i] = u >= p ? 1/(1 − p) : 0, u = Philox uniform element
     offset + i of (seed, stream). The same bytes on every backend. */
  lrk_status (*dropout_mask)(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float p, float* mask);
  /* The backward of attention_forward: dq [T, H·hd], dk/dv [T, KVH·hd] from dout [T, H·hd],
     P recomputed from q and k: dS = P ⊙ (dout vᵀ − rowsum), dq = s dS k, dk = s dSᵀ q, dv = Pᵀ dout
     (the heads of a KV group summed in head order). */
  lrk_status (*attention_backward)(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q,
                                   const float* k, const float* v, const float* dout, float* dq, float* dk, float* dv);
  const char* (*last_error)(void);
} lrk_ops;

/* The CPU table (always present). */
const lrk_ops* lrk_cpu_ops(void);

/* Exported by liblowrank_cuda.so. */
LRK_API int lrk_cuda_abi(void);
/* 0 when a device is usable; else a CUDA error code, with the reason in `why`. */
LRK_API int lrk_cuda_probe(char* device_name, size_t name_len, char* why, size_t why_len);
LRK_API const lrk_ops* lrk_cuda_ops(void);
/* Optional (the addon checks for them): what runs the GEMMs ("cuBLAS 13.0.2 (...), matmul
   fp32" or "tiled kernel, fp32 (why)"), and the device bytes the library holds now and at
   their peak since the last reset (reset = 1 resets the peak after reading). */
LRK_API void lrk_cuda_gemm_info(char* out, size_t len);
LRK_API void lrk_cuda_memory(int64_t* current, int64_t* peak, int reset);
/* Optional: a dense fp32 matrix [rows, cols] (row-major host copy) kept on the device for
   repeated thin products (the randomized SVD's operator, dense_matrix.cu): apply with
   trans 0 gives y [rows, l] = M x for x [cols, l]; trans 1 gives y [cols, l] = Mᵀ x for
   x [rows, l]; host row-major in and out. */
typedef struct lrk_cuda_matrix lrk_cuda_matrix;
LRK_API lrk_status lrk_cuda_matrix_create(const float* host, int64_t rows, int64_t cols, lrk_cuda_matrix** out);
LRK_API lrk_status lrk_cuda_matrix_apply(lrk_cuda_matrix* m, int trans, const float* x, int64_t l, float* y);
LRK_API void lrk_cuda_matrix_destroy(lrk_cuda_matrix* m);
/* Optional: the exact thin SVD in double (svd.cu, cuSOLVER gesvd) of M [rows, cols] (fp32,
   row-major, host): U [rows, k], s [k] descending, Vt [k, cols] in fp32, k = min(rows, cols),
   before the sign rule (the caller's). lrk_cuda_svd_info says what runs the SVDs and
   answers 1 when cuSOLVER is in use (else the SVDs stay on LAPACK). */
LRK_API int lrk_cuda_svd_info(char* out, size_t len);
LRK_API lrk_status lrk_cuda_svd_f64(const float* m, int64_t rows, int64_t cols, float* u, float* s, float* vt);
/* Optional: the dense deltas of a PEFT svd-type merge on the device (dense_stack.cu): `count`
   terms t_i [rows, cols]; stack_delta sets t_i = scale·B A (B [rows, r], A [r, cols], host
   fp32); stack_magnitude keeps exactly k entries of t_i (the largest |t|, lowest index on
   ties; k <= 0 zeroes it, k >= rows·cols keeps it); stack_dare sets t_i = keep ? t_i/d : 0
   (keep = mask[j] when given, else Philox(seed, stream) uniform u_j < density; density >= 1
   leaves it); stack_combine makes the result, Σ w_i t_i (ties 0) or the TIES election
   (ties 1; sign_total 1 = "total", 0 = "frequency"), copied to `out` when not NULL;
   stack_svd is the result's thin SVD in double (as lrk_cuda_svd_f64). */
typedef struct lrk_cuda_stack lrk_cuda_stack;
LRK_API lrk_status lrk_cuda_stack_create(int64_t count, int64_t rows, int64_t cols, lrk_cuda_stack** out);
LRK_API void lrk_cuda_stack_destroy(lrk_cuda_stack* st);
LRK_API lrk_status lrk_cuda_stack_delta(lrk_cuda_stack* st, int64_t i, int64_t r, float scale, const float* b, const float* a);
LRK_API lrk_status lrk_cuda_stack_magnitude(lrk_cuda_stack* st, int64_t i, int64_t k);
LRK_API lrk_status lrk_cuda_stack_dare(lrk_cuda_stack* st, int64_t i, double density, uint64_t seed, uint64_t stream,
                                       const uint8_t* mask);
LRK_API lrk_status lrk_cuda_stack_combine(lrk_cuda_stack* st, int ties, int sign_total, const float* weights, float* out);
LRK_API lrk_status lrk_cuda_stack_svd(lrk_cuda_stack* st, float* u, float* s, float* vt);
/* Optional, mergekit's delta merges (merge_delta.cc) on the same stack: stack_set uploads t_i
   [rows, cols]; stack_dare_l1 zeroes t_i where keep is 0 (mask, or Philox u_j < density) and,
   with rescale, multiplies it by Σ|t| / Σ|t ⊙ keep| (both ≥ 1e-7; density ≥ 1 leaves it);
   stack_mix makes the result of v_i = w_i t_i: TIES election (ties 1) over the agreeing
   weights' sum, or Σ v over weight_sum; ÷ the divisor when normalize; × lambda when use_lambda. */
LRK_API lrk_status lrk_cuda_stack_set(lrk_cuda_stack* st, int64_t i, const float* t);
LRK_API lrk_status lrk_cuda_stack_dare_l1(lrk_cuda_stack* st, int64_t i, double density, uint64_t seed, uint64_t stream,
                                          const uint8_t* mask, int rescale);
LRK_API lrk_status lrk_cuda_stack_mix(lrk_cuda_stack* st, int ties, int sign_total, const float* weights, int normalize,
                                      float weight_sum, int use_lambda, float lambda, float* out);

#ifdef __cplusplus
}
#endif

#endif /* LOWRANK_BACKEND_OPS_H_ */
