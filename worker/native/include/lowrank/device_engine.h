/*
 * The device-resident LoRA training engine of the CUDA backend (docs/cuda.md), exported
 * by liblowrank_cuda.so: the CPU engine's model (src/train, Llama-family decoders: GQA,
 * projection biases, tied embeddings, sliding windows, packed documents) with its frozen
 * weights uploaded once, activations, LoRA factors, gradients and AdamW moments kept on
 * the device, and one micro-batch's forward + masked causal-LM loss + backward per call.
 * The math is the CPU engine's (engine.cc, optim.cc), kernel by kernel (backend_ops.h).
 *
 * The caller (the addon) owns what the CPU engine decides on the host: the RoPE tables,
 * each token's position and document start, the shifted labels, the dropout streams and
 * the learning rate of the schedule. Every call returns a status; lrk_cuda_last_error()
 * gives the message. An engine is used by one thread at a time.
 */
#ifndef LOWRANK_DEVICE_ENGINE_H_
#define LOWRANK_DEVICE_ENGINE_H_

#include "lowrank/backend_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a declaration below changes; the addon refuses a library of another version. */
#define LRK_DEVICE_ENGINE_ABI 3

typedef struct lrk_dev_engine lrk_dev_engine;

/* The seven projections, in the CPU engine's order (train/config.h Proj). */
#define LRK_DEV_NUM_PROJ 7

typedef struct {
  int64_t vocab, hidden, intermediate, layers, heads, kv_heads, head_dim;
  double rms_norm_eps;
  int tie_word_embeddings;            /* the head is the embedding */
  int proj_bias[LRK_DEV_NUM_PROJ];    /* which projections carry a bias */
  const int64_t* window;              /* [layers]: 0 = full causal attention, else the sliding window */
} lrk_dev_config;

/* The frozen tensors set by lrk_dev_set_tensor (layer/proj where they apply). */
typedef enum {
  LRK_DEV_EMBED = 0,      /* [vocab, hidden], f32 or bf16 */
  LRK_DEV_NORM = 1,       /* final norm [hidden], f32 */
  LRK_DEV_LM_HEAD = 2,    /* [vocab, hidden], f32 or bf16; not with tied embeddings */
  LRK_DEV_INPUT_NORM = 3, /* [hidden], f32 */
  LRK_DEV_POST_NORM = 4,  /* [hidden], f32 */
  LRK_DEV_PROJ_W = 5,     /* [out, in], f32 or bf16 (widened to fp32 in the GEMM) */
  LRK_DEV_PROJ_B = 6,     /* [out], f32; only on projections with a bias */
} lrk_dev_tensor;

/* The trainable state, packed: for each (layer, proj) with r > 0 in that order, A [r, in], B [out, r]
   and, for a DoRA module, its magnitude m [out]. */
typedef enum { LRK_DEV_PARAMS = 0, LRK_DEV_GRADS = 1, LRK_DEV_EXP_AVG = 2, LRK_DEV_EXP_AVG_SQ = 3 } lrk_dev_state;

typedef struct {
  int64_t rows, seq;
  const int32_t* tokens;     /* [rows·seq], in [0, vocab) */
  const int32_t* targets;    /* [rows·seq]: the label position t predicts (already shifted), or -100 */
  const int64_t* pos;        /* [rows·seq]: RoPE position, < the tables' npos */
  const int64_t* doc_start;  /* [rows·seq]: the row-local index of the token's document's first token */
} lrk_dev_batch;

LRK_API int lrk_dev_abi(void);

LRK_API lrk_status lrk_dev_create(const lrk_dev_config* config, lrk_dev_engine** out);
LRK_API void lrk_dev_destroy(lrk_dev_engine* e);

/* Uploads one frozen tensor (copied; the host buffer may be freed). Every one must be set before a step. */
LRK_API lrk_status lrk_dev_set_tensor(lrk_dev_engine* e, int which, int64_t layer, int proj, const void* data,
                                      lrk_dtype dtype);
/* cos/sin [npos, head_dim / 2] (train/rope.h rope_tables for positions [0, npos)). */
LRK_API lrk_status lrk_dev_set_rope(lrk_dev_engine* e, int64_t npos, const float* cos, const float* sin);
/* ranks/scales/dora/core [layers · 7] (r = 0: no adapter; dora and core may be NULL: none): lays
   out the packed state, all zeros. DoRA (PEFT semantics, METHODS §1.3): y = b + (m/n) ⊙ (x Wᵀ +
   s·BAx), n = ‖W + s·BA‖ per output row, detached; with dropout PEFT's W·drop(x) path. A core
   module (LoRA-SB / LoRA-XS, METHODS §1.7): y = x Wᵀ + s·((x̃ Aᵀ) Rᵀ) Bᵀ with A and B frozen
   (lrk_dev_set_factors) and only R [r, r] in the packed state; not with DoRA. */
LRK_API lrk_status lrk_dev_set_adapter(lrk_dev_engine* e, const int64_t* ranks, const float* scales,
                                       const int* dora, const int* core);
/* The frozen factors A [r, in] and B [out, r] of a core module (after lrk_dev_set_adapter; copied). */
LRK_API lrk_status lrk_dev_set_factors(lrk_dev_engine* e, int64_t layer, int proj, const float* a, const float* b);
/* Activation recomputation (on = 1): each layer's input kept, its forward rerun in the backward. */
LRK_API lrk_status lrk_dev_set_recompute(lrk_dev_engine* e, int on);
/* The matmul of this engine's GEMMs with a bf16 frozen weight (after the tensors are set):
   bf16 = 1: the fp32 operand rounded to bf16, fp32 accumulation (torch autocast's bf16
   training); 0: fp32. *effective (may be NULL): 1 when bf16 will run, i.e. the GEMMs are on
   cuBLAS and some frozen matrix is bf16 on the device; 0 otherwise (the tiled kernel and
   fp32 weights compute in fp32). */
LRK_API lrk_status lrk_dev_set_matmul(lrk_dev_engine* e, int bf16, int* effective);
/* Floats in one packed state buffer. */
LRK_API int64_t lrk_dev_num_params(const lrk_dev_engine* e);
LRK_API lrk_status lrk_dev_read(lrk_dev_engine* e, int which, float* host, int64_t n);
LRK_API lrk_status lrk_dev_write(lrk_dev_engine* e, int which, const float* host, int64_t n);

LRK_API lrk_status lrk_dev_zero_grad(lrk_dev_engine* e);
/*
 * Forward, loss and backward of one micro-batch: gradients of loss_scale · Σ loss are
 * added to the packed gradients. dropout p > 0: PEFT's lora_dropout on each adapter's
 * input with the mask of Philox(dropout_seed, dropout_streams[layer · 7 + proj]) (P10).
 * loss_sum / count: Σ of the per-token losses (in token order, double) and labelled tokens.
 */
LRK_API lrk_status lrk_dev_forward_backward(lrk_dev_engine* e, const lrk_dev_batch* batch, float loss_scale,
                                            float dropout, uint64_t dropout_seed, const uint64_t* dropout_streams,
                                            double* loss_sum, int64_t* count);
/* Forward and loss only (evaluation: no dropout, gradients untouched). */
LRK_API lrk_status lrk_dev_forward(lrk_dev_engine* e, const lrk_dev_batch* batch, double* loss_sum, int64_t* count);
/*
 * clip_grad_norm_ (max_grad_norm > 0) then AdamW step t >= 1 at learning rate lr on every
 * packed tensor; grad_norm: the total norm before clipping (per-tensor norms in packed order).
 */
LRK_API lrk_status lrk_dev_optimizer_step(lrk_dev_engine* e, double max_grad_norm, double lr, double beta1,
                                          double beta2, double eps, double weight_decay, int64_t t,
                                          double* grad_norm);

/*
 * Generation with KV caches on the device (the CPU engine's Engine::generate forward;
 * the decoding loop and sampling stay the caller's, train/generate_loop.h): begin sizes the
 * caches for rows × max_len positions (max_len ≤ 8192, within the RoPE tables); each step
 * feeds t new tokens per row at positions p0 .. p0 + t − 1 (tokens, RoPE positions and the
 * first key each may attend to, [rows · t]) and writes the logits [rows, vocab] of each
 * row's last new token to host memory; end frees the caches.
 */
LRK_API lrk_status lrk_dev_generate_begin(lrk_dev_engine* e, int64_t rows, int64_t max_len);
LRK_API lrk_status lrk_dev_generate_step(lrk_dev_engine* e, int64_t t, int64_t p0, const int32_t* tokens,
                                         const int64_t* pos, const int64_t* key_start, float* logits);
LRK_API void lrk_dev_generate_end(lrk_dev_engine* e);

#ifdef __cplusplus
}
#endif

#endif /* LOWRANK_DEVICE_ENGINE_H_ */
