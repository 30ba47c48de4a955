// The device-resident training engine (include/lowrank/device_engine.h): the CPU engine's
// forward and backward (src/train/engine.cc) layer by layer, on device buffers, with the
// kernels' device entry points (device_ops.cuh). Frozen weights are uploaded once; per
// step only the micro-batch's token ids, targets, positions (a few KB) go up and the
// per-token losses and per-tensor Σg² (a few KB) come back.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "blas.cuh"
#include "device_ops.cuh"
#include "lowrank/device_engine.h"

namespace lowrank::cuda {
namespace {

enum { kQ, kK, kV, kO, kGate, kUp, kDown, kNumProj };
constexpr int32_t kIgnore = -100;

// A device allocation that frees itself and can move.
class DevMem {
 public:
  DevMem() = default;
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  DevMem(DevMem&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  DevMem& operator=(DevMem&&) = delete;
  ~DevMem() { counted_free(p_, bytes_ ? bytes_ : 1); }
  lrk_status alloc(size_t bytes) {
    if (p_ && bytes_ == bytes) return LRK_OK;
    if (p_) counted_free(p_, bytes_ ? bytes_ : 1);
    p_ = nullptr;
    bytes_ = 0;
    LRK_CUDA_TRY(counted_malloc(&p_, bytes ? bytes : 1));
    bytes_ = bytes;
    return LRK_OK;
  }
  lrk_status upload(const void* host, size_t bytes) {
    if (lrk_status s = alloc(bytes)) return s;
    if (bytes) LRK_CUDA_TRY(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice));
    return LRK_OK;
  }
  lrk_status zero() {
    if (bytes_) LRK_CUDA_TRY(cudaMemset(p_, 0, bytes_));
    return LRK_OK;
  }
  template <typename T = float>
  T* as() const {
    return static_cast<T*>(p_);
  }
  bool empty() const { return p_ == nullptr; }
  void reset() {
    if (p_) counted_free(p_, bytes_ ? bytes_ : 1);
    p_ = nullptr;
    bytes_ = 0;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

struct Weight {
  DevMem mem;
  lrk_dtype dtype = LRK_F32;
};

struct LayerWeights {
  DevMem input_norm, post_norm;
  Weight w[kNumProj];
  DevMem b[kNumProj];
};

struct LayerActs {
  DevMem in, x1, rstd1, q, k, v, ao, mid, x2, rstd2, gate, up, act;
  DevMem h[kNumProj], xd[kNumProj], mask[kNumProj];
  DevMem z[kNumProj], norm[kNumProj];  // DoRA: x Wᵀ + s·h Bᵀ before the m/n rescale, and n
};

}  // namespace
}  // namespace lowrank::cuda

using namespace lowrank::cuda;

struct lrk_dev_engine {
  lrk_dev_config c{};
  std::vector<int64_t> window;
  Weight embed, lm_head;
  DevMem norm;
  std::vector<LayerWeights> layers;
  DevMem cos, sin;
  int64_t npos = 0;
  // Adapter: ranks/scales per (layer, proj), offsets of A and B in the packed state.
  std::vector<int64_t> rank, off_a, off_b, off_m, off_r;
  std::vector<int> dora;  // DoRA modules: the magnitude m [out] follows B in the packed state
  std::vector<int> core;  // LoRA-SB / XS modules: only R [r, r] is packed; A and B frozen in fa / fb
  std::vector<DevMem> fa, fb;
  std::vector<float> scale;
  int64_t num_params = 0;
  DevMem params, grads, exp_avg, exp_avg_sq;
  std::vector<int64_t> tensor_off, tensor_size;  // A, B (and m) of each adapted module in order
  DevMem d_tensor_off, d_tensor_size, d_sums;
  // Activations for rows × seq tokens.
  int64_t rows = 0, seq = 0;
  bool dropout_bufs = false;
  // Activation recomputation: one scratch LayerActs and each layer's input kept instead of
  // every layer's activations; the backward reruns a layer's forward (same masks) first.
  bool recompute = false;
  // The GEMMs' matmul (lrk_dev_set_matmul); the process setting until set.
  Matmul matmul = blas_matmul();
  std::vector<LayerActs> acts;
  std::vector<DevMem> layer_in;
  DevMem recompute_out;
  DevMem tokens, targets, pos, doc_start;
  DevMem fin, xf, rstdf, logits, row_loss;
  int64_t attn_heads = 0;   // heads per chunk of the attention backward (P, dS [attn_heads, T, T])
  int64_t logits_rows = 0;  // tokens per loss chunk: logits [chunk, vocab], their gradient in place
  DevMem dres, dx, dq, dk, dv, dao, dgate, dup, dact, g, tmp, tmpd, P, dS;
  DevMem gr;             // LoRA-SB scratch: (dy B) R [n, r]
  DevMem ba, dyg, dyg1;  // DoRA scratch: B·A [out, in], dy ⊙ (m/n) and (with dropout) dy ⊙ (m/n − 1) [n, out]
  std::vector<float> host_loss;
  std::vector<int32_t> host_targets;
  // Generation: K and V caches per layer [rows · gen_len, kv_dim], the step's logits [rows, vocab].
  int64_t gen_rows = 0, gen_len = 0;
  std::vector<DevMem> kc, vc;
  DevMem gen_logits;

  int64_t q_dim() const { return c.heads * c.head_dim; }
  int64_t kv_dim() const { return c.kv_heads * c.head_dim; }
  int64_t proj_out(int p) const {
    if (p == kQ) return q_dim();
    if (p == kK || p == kV) return kv_dim();
    if (p == kGate || p == kUp) return c.intermediate;
    return c.hidden;  // o, down
  }
  int64_t proj_in(int p) const {
    if (p == kO) return q_dim();
    if (p == kDown) return c.intermediate;
    return c.hidden;
  }
  size_t slot(int64_t l, int p) const { return static_cast<size_t>(l * kNumProj + p); }
  // A slot's factors: packed (trained) or frozen (a core module's).
  float* factor_a(size_t s) const { return core[s] ? fa[s].as() : params.as() + off_a[s]; }
  float* factor_b(size_t s) const { return core[s] ? fb[s].as() : params.as() + off_b[s]; }
  LayerActs& act(int64_t l) { return acts[recompute ? 0 : static_cast<size_t>(l)]; }
  float* input(int64_t l) { return recompute ? layer_in[static_cast<size_t>(l)].as() : act(l).in.as(); }
};

namespace {

lrk_status ready(const lrk_dev_engine* e) {
  if (e->embed.mem.empty() || e->norm.empty() || (!e->c.tie_word_embeddings && e->lm_head.mem.empty()))
    return fail(LRK_INVALID_ARGUMENT, "device engine: the embedding, final norm and head must be set before a step");
  for (int64_t l = 0; l < e->c.layers; l++) {
    const LayerWeights& w = e->layers[static_cast<size_t>(l)];
    if (w.input_norm.empty() || w.post_norm.empty())
      return fail(LRK_INVALID_ARGUMENT, "device engine: layer " + std::to_string(l) + " lacks a norm weight");
    for (int p = 0; p < kNumProj; p++)
      if (w.w[p].mem.empty() || (e->c.proj_bias[p] && w.b[p].empty()))
        return fail(LRK_INVALID_ARGUMENT, "device engine: layer " + std::to_string(l) + " projection " +
                                              std::to_string(p) + " lacks its weight or bias");
  }
  if (e->num_params == 0) return fail(LRK_INVALID_ARGUMENT, "device engine: no adapter to train (set_adapter)");
  for (size_t s = 0; s < e->core.size(); s++)
    if (e->core[s] && (e->fa[s].empty() || e->fb[s].empty()))
      return fail(LRK_INVALID_ARGUMENT, "device engine: core module " + std::to_string(s) + " lacks its frozen A and B (set_factors)");
  return LRK_OK;
}

// A count >= 1 from the environment (`name`, in `unit`), or `def` when unset; a bad value
// fails the step and names the setting.
lrk_status env_count(const char* name, const char* unit, int64_t def, int64_t* out) {
  *out = def;
  const char* v = std::getenv(name);
  if (!v || !*v) return LRK_OK;
  char* end = nullptr;
  const long long t = std::strtoll(v, &end, 10);
  if (*end || t < 1)
    return fail(LRK_INVALID_ARGUMENT, std::string(name) + " must be a number of " + unit + " >= 1, got \"" + v + "\"");
  *out = t;
  return LRK_OK;
}

// Tokens per chunk of the loss: [tokens, vocab] logits are never whole (a 1B Llama's
// 4096 × 128256 would be 2 GiB, its gradient 2 more). LOWRANK_CUDA_LOGITS_CHUNK (tokens)
// overrides the default of 2^26 floats (256 MiB) per chunk.
lrk_status logits_chunk(int64_t n, int64_t vocab, int64_t* rows) {
  int64_t want = 0;
  if (lrk_status s = env_count("LOWRANK_CUDA_LOGITS_CHUNK", "tokens", std::max<int64_t>(1, (int64_t{1} << 26) / vocab), &want))
    return s;
  *rows = std::min(n, want);
  return LRK_OK;
}

// Heads per chunk of the attention backward, whose P and dS scratch is [chunk, T, T]:
// every head at once up to 2^26 floats (256 MiB) each, fewer beyond (4096 tokens × 32 heads
// would be 2 GiB each). LOWRANK_CUDA_ATTENTION_SCRATCH (floats) overrides the budget.
lrk_status attention_chunk(int64_t heads, int64_t seq, int64_t* chunk) {
  int64_t budget = 0;
  if (lrk_status s = env_count("LOWRANK_CUDA_ATTENTION_SCRATCH", "floats", int64_t{1} << 26, &budget)) return s;
  *chunk = std::clamp<int64_t>(budget / (seq * seq), 1, heads);
  return LRK_OK;
}

// Sizes the activations for rows × seq (and the dropout buffers when dropout is on).
lrk_status ensure_buffers(lrk_dev_engine* e, int64_t rows, int64_t seq, bool dropout) {
  const lrk_dev_config& c = e->c;
  const int64_t n = rows * seq, d = c.hidden, ff = c.intermediate, qd = e->q_dim(), kvd = e->kv_dim();
  if (rows == e->rows && seq == e->seq && (!dropout || e->dropout_bufs)) return LRK_OK;
  const int64_t sets = e->recompute ? 1 : c.layers;
  e->acts.resize(static_cast<size_t>(sets));
  e->layer_in.resize(static_cast<size_t>(e->recompute ? c.layers : 0));
  for (DevMem& m : e->layer_in)
    if (lrk_status s = m.alloc(f32_bytes(n * d))) return s;
  if (e->recompute)
    if (lrk_status s = e->recompute_out.alloc(f32_bytes(n * d))) return s;
  int64_t rmax = 0;
  for (int64_t r : e->rank) rmax = std::max(rmax, r);
  for (int64_t l = 0; l < sets; l++) {
    LayerActs& a = e->acts[static_cast<size_t>(l)];
    for (DevMem* m : {&a.x1, &a.mid, &a.x2})
      if (lrk_status s = m->alloc(f32_bytes(n * d))) return s;
    if (!e->recompute)  // else the inputs live in layer_in
      if (lrk_status s = a.in.alloc(f32_bytes(n * d))) return s;
    for (DevMem* m : {&a.rstd1, &a.rstd2})
      if (lrk_status s = m->alloc(f32_bytes(n))) return s;
    for (DevMem* m : {&a.q, &a.ao})
      if (lrk_status s = m->alloc(f32_bytes(n * qd))) return s;
    for (DevMem* m : {&a.k, &a.v})
      if (lrk_status s = m->alloc(f32_bytes(n * kvd))) return s;
    for (DevMem* m : {&a.gate, &a.up, &a.act})
      if (lrk_status s = m->alloc(f32_bytes(n * ff))) return s;
    for (int p = 0; p < kNumProj; p++) {
      int64_t r = e->rank[e->slot(l, p)];
      if (e->recompute)  // the scratch set serves every layer
        for (int64_t j = 0; j < c.layers; j++) r = std::max(r, e->rank[e->slot(j, p)]);
      if (r == 0) continue;
      if (lrk_status s = a.h[p].alloc(f32_bytes(n * r))) return s;
      bool any_dora = e->dora[e->slot(l, p)] != 0;
      if (e->recompute)
        for (int64_t j = 0; j < c.layers; j++) any_dora = any_dora || e->dora[e->slot(j, p)] != 0;
      if (any_dora) {
        if (lrk_status s = a.z[p].alloc(f32_bytes(n * e->proj_out(p)))) return s;
        if (lrk_status s = a.norm[p].alloc(f32_bytes(e->proj_out(p)))) return s;
      }
      if (dropout) {
        if (lrk_status s = a.xd[p].alloc(f32_bytes(n * e->proj_in(p)))) return s;
        if (lrk_status s = a.mask[p].alloc(f32_bytes(n * e->proj_in(p)))) return s;
      }
    }
  }
  for (DevMem* m : {&e->tokens, &e->targets})
    if (lrk_status s = m->alloc(static_cast<size_t>(n) * sizeof(int32_t))) return s;
  for (DevMem* m : {&e->pos, &e->doc_start})
    if (lrk_status s = m->alloc(static_cast<size_t>(n) * sizeof(int64_t))) return s;
  for (DevMem* m : {&e->fin, &e->xf, &e->dres, &e->dx, &e->tmpd})
    if (lrk_status s = m->alloc(f32_bytes(n * d))) return s;
  for (DevMem* m : {&e->rstdf, &e->row_loss})
    if (lrk_status s = m->alloc(f32_bytes(n))) return s;
  if (lrk_status s = logits_chunk(n, c.vocab, &e->logits_rows)) return s;
  if (lrk_status s = e->logits.alloc(f32_bytes(e->logits_rows * c.vocab))) return s;
  for (DevMem* m : {&e->dq, &e->dao})
    if (lrk_status s = m->alloc(f32_bytes(n * qd))) return s;
  for (DevMem* m : {&e->dk, &e->dv})
    if (lrk_status s = m->alloc(f32_bytes(n * kvd))) return s;
  for (DevMem* m : {&e->dgate, &e->dup, &e->dact})
    if (lrk_status s = m->alloc(f32_bytes(n * ff))) return s;
  if (lrk_status s = e->g.alloc(f32_bytes(n * std::max<int64_t>(rmax, 1)))) return s;
  if (std::find(e->core.begin(), e->core.end(), 1) != e->core.end())
    if (lrk_status s = e->gr.alloc(f32_bytes(n * rmax))) return s;
  int64_t dora_out = 0, dora_w = 0;
  for (size_t sl = 0; sl < e->dora.size(); sl++)
    if (e->dora[sl]) {
      const int p = static_cast<int>(sl % kNumProj);
      dora_out = std::max(dora_out, e->proj_out(p));
      dora_w = std::max(dora_w, e->proj_out(p) * e->proj_in(p));
    }
  if (dora_out > 0) {
    if (lrk_status s = e->dyg.alloc(f32_bytes(n * dora_out))) return s;
    if (lrk_status s = e->ba.alloc(f32_bytes(dora_w))) return s;
    if (dropout)
      if (lrk_status s = e->dyg1.alloc(f32_bytes(n * dora_out))) return s;
  }
  if (lrk_status s = e->tmp.alloc(f32_bytes(n * std::max({d, ff, qd})))) return s;
  // Attention backward scratch: P and dS of a chunk of heads at a time ([chunk, T, T]).
  if (lrk_status s = attention_chunk(c.heads, seq, &e->attn_heads)) return s;
  for (DevMem* m : {&e->P, &e->dS})
    if (lrk_status s = m->alloc(f32_bytes(e->attn_heads * seq * seq))) return s;
  e->rows = rows;
  e->seq = seq;
  e->dropout_bufs = e->dropout_bufs || dropout;
  return LRK_OK;
}

struct StepCtx {
  lrk_dev_engine* e;
  int64_t n;
  float dropout;
  uint64_t seed;
  const uint64_t* streams;
};

// y = x Wᵀ + b + s·(drop(x) Aᵀ) Bᵀ (engine.cc linear_forward without DoRA / LoRA-SB).
void linear_forward(const StepCtx& k, int64_t l, int p, const float* x, float* y) {
  lrk_dev_engine* e = k.e;
  const LayerWeights& w = e->layers[static_cast<size_t>(l)];
  LayerActs& a = e->act(l);
  const size_t s = e->slot(l, p);
  const int64_t r = e->rank[s], in = e->proj_in(p), out = e->proj_out(p);
  const float* xa = x;
  if (r > 0 && k.dropout > 0.0f) {
    dropout_mask_dev(k.seed, k.streams[s], 0, k.n * in, k.dropout, a.mask[p].as());
    mul_dev(k.n * in, x, a.mask[p].as(), a.xd[p].as());
    xa = a.xd[p].as();
  }
  const float* pa = r > 0 ? e->factor_a(s) : nullptr;
  const float* pb = r > 0 ? e->factor_b(s) : nullptr;
  const bool dora = r > 0 && e->dora[s];
  const void* W = w.w[p].mem.as<void>();
  if (r > 0 && e->core[s]) {
    // LoRA-SB: y = x Wᵀ + s·((x̃ Aᵀ) Rᵀ) Bᵀ; h = x̃ Aᵀ kept, h Rᵀ in the g scratch (the CPU's order).
    lora_forward_dev(k.n, in, out, 0, 0.0f, x, x, W, w.w[p].dtype, nullptr, nullptr, y, nullptr);
    gemm(false, true, k.n, r, in, 1.0f, xa, in, pa, in, 0.0f, a.h[p].as(), r);
    gemm(false, true, k.n, r, r, 1.0f, a.h[p].as(), r, e->params.as() + e->off_r[s], r, 0.0f, e->g.as(), r);
    gemm(false, true, k.n, out, r, e->scale[s], e->g.as(), r, pb, r, 1.0f, y, out);
  } else if (dora && xa != x) {
    // PEFT's DoRA with dropout: y = W x + (g − 1) ⊙ W x̃ + g ⊙ z̃, z̃ = W x̃ + s·B A x̃ (kept in z),
    // g = m/n. W x̃ goes to tmp, copied into z, and z += s·h Bᵀ (the CPU's order).
    float* wxd = e->tmp.as();
    float* z = a.z[p].as();
    lora_forward_dev(k.n, in, out, 0, 0.0f, x, x, W, w.w[p].dtype, nullptr, nullptr, y, nullptr);
    lora_forward_dev(k.n, in, out, 0, 0.0f, xa, xa, W, w.w[p].dtype, nullptr, nullptr, wxd, nullptr);
    gemm(false, true, k.n, r, in, 1.0f, xa, in, pa, in, 0.0f, a.h[p].as(), r);
    copy_dev(k.n * out, wxd, z);
    gemm(false, true, k.n, out, r, e->scale[s], a.h[p].as(), r, pb, r, 1.0f, z, out);
    dora_norm_dev(out, in, W, w.w[p].dtype, e->scale[s], pa, pb, r, e->ba.as(), a.norm[p].as());
    dora_dropout_combine_dev(k.n, out, wxd, z, e->params.as() + e->off_m[s], a.norm[p].as(), y);
  } else {
    lora_forward_dev(k.n, in, out, r, e->scale[s], x, xa, W, w.w[p].dtype, pa, pb, dora ? a.z[p].as() : y,
                     r > 0 ? a.h[p].as() : nullptr);
    if (dora) {  // y = (m/n) ⊙ z, n = ‖W + s·BA‖ per row (detached)
      dora_norm_dev(out, in, W, w.w[p].dtype, e->scale[s], pa, pb, r, e->ba.as(), a.norm[p].as());
      dora_scale_dev(k.n, out, a.z[p].as(), e->params.as() + e->off_m[s], a.norm[p].as(), y);
    }
  }
  if (e->c.proj_bias[p]) bias_add_dev(k.n, out, w.b[p].as(), y);
}

// DoRA with dropout (engine.cc dora_dropout_backward), g = m/n: dm += Σ dy ⊙ z̃ / n;
// dB += s (dy ⊙ g)ᵀ h; dA += s ((dy ⊙ g) B)ᵀ x̃; dx (+)= dy W + D ⊙ [(dy ⊙ (g − 1)) W + s ((dy ⊙ g) B) A].
void dora_dropout_backward(const StepCtx& k, int64_t l, int p, const float* dy, float* dx, bool accumulate) {
  lrk_dev_engine* e = k.e;
  const LayerWeights& w = e->layers[static_cast<size_t>(l)];
  LayerActs& a = e->act(l);
  const size_t s = e->slot(l, p);
  const int64_t r = e->rank[s], in = e->proj_in(p), out = e->proj_out(p);
  float* params = e->params.as();
  float* grads = e->grads.as();
  const float* pa = params + e->off_a[s];
  const void* W = w.w[p].mem.as<void>();
  dora_grad_m_dev(k.n, out, dy, a.z[p].as(), a.norm[p].as(), grads + e->off_m[s]);
  dora_dropout_dy_dev(k.n, out, dy, params + e->off_m[s], a.norm[p].as(), e->dyg.as(), e->dyg1.as());
  // g = (dy ⊙ g) B into e->g, and the factor gradients (no input gradient here)
  lora_backward_dev(k.n, in, out, r, e->scale[s], a.xd[p].as(), a.h[p].as(), e->dyg.as(), W, w.w[p].dtype, pa,
                    params + e->off_b[s], nullptr, false, nullptr, e->g.as(), nullptr, grads + e->off_a[s],
                    grads + e->off_b[s]);
  if (!dx) return;
  float* t = e->tmp.as();
  lora_backward_dev(k.n, in, out, 0, 0.0f, nullptr, nullptr, dy, W, w.w[p].dtype, nullptr, nullptr, dx, accumulate,
                    nullptr, nullptr, nullptr, nullptr, nullptr);
  lora_backward_dev(k.n, in, out, 0, 0.0f, nullptr, nullptr, e->dyg1.as(), W, w.w[p].dtype, nullptr, nullptr, t,
                    false, nullptr, nullptr, nullptr, nullptr, nullptr);
  gemm(false, false, k.n, in, r, e->scale[s], e->g.as(), r, pa, in, 1.0f, t, in);
  masked_add_dev(k.n * in, t, a.mask[p].as(), dx);
}

// LoRA-SB (engine.cc linear_backward's core branch): g = dy B; dR += s gᵀ h; dx (+)= dy W +
// s (g R) A [⊙ D]. A and B are frozen: no gradient.
void core_backward(const StepCtx& k, int64_t l, int p, const float* dy, float* dx, bool accumulate) {
  lrk_dev_engine* e = k.e;
  const LayerWeights& w = e->layers[static_cast<size_t>(l)];
  LayerActs& a = e->act(l);
  const size_t s = e->slot(l, p);
  const int64_t r = e->rank[s], in = e->proj_in(p), out = e->proj_out(p);
  const float* R = e->params.as() + e->off_r[s];
  if (dx)
    lora_backward_dev(k.n, in, out, 0, 0.0f, nullptr, nullptr, dy, w.w[p].mem.as<void>(), w.w[p].dtype, nullptr,
                      nullptr, dx, accumulate, nullptr, nullptr, nullptr, nullptr, nullptr);
  gemm(false, false, k.n, r, out, 1.0f, dy, out, e->factor_b(s), r, 0.0f, e->g.as(), r);
  gemm(true, false, r, r, k.n, e->scale[s], e->g.as(), r, a.h[p].as(), r, 1.0f, e->grads.as() + e->off_r[s], r);
  if (!dx) return;
  gemm(false, false, k.n, r, r, 1.0f, e->g.as(), r, R, r, 0.0f, e->gr.as(), r);
  if (k.dropout > 0.0f) {
    gemm(false, false, k.n, in, r, e->scale[s], e->gr.as(), r, e->factor_a(s), in, 0.0f, e->tmp.as(), in);
    masked_add_dev(k.n * in, e->tmp.as(), a.mask[p].as(), dx);
  } else {
    gemm(false, false, k.n, in, r, e->scale[s], e->gr.as(), r, e->factor_a(s), in, 1.0f, dx, in);
  }
}

// dx (+)= dy W + s (dy B) A [⊙ D]; dA, dB accumulate (engine.cc linear_backward).
void linear_backward(const StepCtx& k, int64_t l, int p, const float* x, const float* dy, float* dx, bool accumulate) {
  lrk_dev_engine* e = k.e;
  const LayerWeights& w = e->layers[static_cast<size_t>(l)];
  LayerActs& a = e->act(l);
  const size_t s = e->slot(l, p);
  const int64_t r = e->rank[s], in = e->proj_in(p), out = e->proj_out(p);
  const bool dropped = r > 0 && k.dropout > 0.0f;
  float* params = e->params.as();
  float* grads = e->grads.as();
  if (r > 0 && e->dora[s] && dropped) {
    dora_dropout_backward(k, l, p, dy, dx, accumulate);
    return;
  }
  if (r > 0 && e->core[s]) {
    core_backward(k, l, p, dy, dx, accumulate);
    return;
  }
  if (r > 0 && e->dora[s]) {  // dm += Σ dy ⊙ z / n; the rest sees dy ⊙ (m/n)
    dora_grad_m_dev(k.n, out, dy, a.z[p].as(), a.norm[p].as(), grads + e->off_m[s]);
    dora_scale_dev(k.n, out, dy, params + e->off_m[s], a.norm[p].as(), e->dyg.as());
    dy = e->dyg.as();
  }
  lora_backward_dev(k.n, in, out, r, e->scale[s], dropped ? a.xd[p].as() : x, r > 0 ? a.h[p].as() : nullptr, dy,
                    w.w[p].mem.as<void>(), w.w[p].dtype, r > 0 ? params + e->off_a[s] : nullptr,
                    r > 0 ? params + e->off_b[s] : nullptr, dx, accumulate, dropped ? a.mask[p].as() : nullptr,
                    e->g.as(), e->tmp.as(), r > 0 ? grads + e->off_a[s] : nullptr,
                    r > 0 ? grads + e->off_b[s] : nullptr);
}

void layer_forward(const StepCtx& k, int64_t l, float* out) {
  lrk_dev_engine* e = k.e;
  const lrk_dev_config& c = e->c;
  const int64_t n = k.n, d = c.hidden, T = e->seq, qd = e->q_dim(), kvd = e->kv_dim();
  LayerActs& a = e->act(l);
  const LayerWeights& w = e->layers[static_cast<size_t>(l)];
  const float* in = e->input(l);
  rmsnorm_forward_dev(n, d, c.rms_norm_eps, in, w.input_norm.as(), a.x1.as(), a.rstd1.as());
  linear_forward(k, l, kQ, a.x1.as(), a.q.as());
  linear_forward(k, l, kK, a.x1.as(), a.k.as());
  linear_forward(k, l, kV, a.x1.as(), a.v.as());
  rope_apply_dev(a.q.as(), n, qd, c.heads, c.head_dim, e->pos.as<int64_t>(), e->cos.as(), e->sin.as(), 0);
  rope_apply_dev(a.k.as(), n, kvd, c.kv_heads, c.head_dim, e->pos.as<int64_t>(), e->cos.as(), e->sin.as(), 0);
  for (int64_t b = 0; b < e->rows; b++)
    attention_forward_dev(T, c.heads, c.kv_heads, c.head_dim, e->window[static_cast<size_t>(l)],
                          e->doc_start.as<int64_t>() + b * T, a.q.as() + b * T * qd, a.k.as() + b * T * kvd,
                          a.v.as() + b * T * kvd, a.ao.as() + b * T * qd);
  linear_forward(k, l, kO, a.ao.as(), e->tmpd.as());
  add_dev(n * d, in, e->tmpd.as(), a.mid.as());
  rmsnorm_forward_dev(n, d, c.rms_norm_eps, a.mid.as(), w.post_norm.as(), a.x2.as(), a.rstd2.as());
  linear_forward(k, l, kGate, a.x2.as(), a.gate.as());
  linear_forward(k, l, kUp, a.x2.as(), a.up.as());
  swiglu_forward_dev(n * c.intermediate, a.gate.as(), a.up.as(), a.act.as());
  linear_forward(k, l, kDown, a.act.as(), e->tmpd.as());
  add_dev(n * d, a.mid.as(), e->tmpd.as(), out);
}

void layer_backward(const StepCtx& k, int64_t l) {
  lrk_dev_engine* e = k.e;
  const lrk_dev_config& c = e->c;
  const int64_t n = k.n, d = c.hidden, T = e->seq, qd = e->q_dim(), kvd = e->kv_dim();
  LayerActs& a = e->act(l);
  const LayerWeights& w = e->layers[static_cast<size_t>(l)];
  // MLP: out = mid + down(silu(gate) ⊙ up).
  linear_backward(k, l, kDown, a.act.as(), e->dres.as(), e->dact.as(), false);
  swiglu_backward_dev(n * c.intermediate, a.gate.as(), a.up.as(), e->dact.as(), e->dgate.as(), e->dup.as());
  linear_backward(k, l, kGate, a.x2.as(), e->dgate.as(), e->dx.as(), false);
  linear_backward(k, l, kUp, a.x2.as(), e->dup.as(), e->dx.as(), true);
  rmsnorm_backward_dev(n, d, a.mid.as(), w.post_norm.as(), a.rstd2.as(), e->dx.as(), e->dres.as(), 1);
  // Attention: mid = in + o(attn(rope(q), rope(k), v)).
  linear_backward(k, l, kO, a.ao.as(), e->dres.as(), e->dao.as(), false);
  for (int64_t b = 0; b < e->rows; b++)
    attention_backward_dev(T, c.heads, c.kv_heads, c.head_dim, e->window[static_cast<size_t>(l)],
                           e->doc_start.as<int64_t>() + b * T, a.q.as() + b * T * qd, a.k.as() + b * T * kvd,
                           a.v.as() + b * T * kvd, e->dao.as() + b * T * qd, e->dq.as() + b * T * qd,
                           e->dk.as() + b * T * kvd, e->dv.as() + b * T * kvd, e->P.as(), e->dS.as(), e->attn_heads);
  rope_apply_dev(e->dq.as(), n, qd, c.heads, c.head_dim, e->pos.as<int64_t>(), e->cos.as(), e->sin.as(), 1);
  rope_apply_dev(e->dk.as(), n, kvd, c.kv_heads, c.head_dim, e->pos.as<int64_t>(), e->cos.as(), e->sin.as(), 1);
  // The embedding is frozen: below layer 0 only the adapters' gradients matter.
  float* dx = l > 0 ? e->dx.as() : nullptr;
  linear_backward(k, l, kQ, a.x1.as(), e->dq.as(), dx, false);
  linear_backward(k, l, kK, a.x1.as(), e->dk.as(), dx, true);
  linear_backward(k, l, kV, a.x1.as(), e->dv.as(), dx, true);
  if (dx) rmsnorm_backward_dev(n, d, e->input(l), w.input_norm.as(), a.rstd1.as(), e->dx.as(), e->dres.as(), 1);
}

DevMem* state_buffer(lrk_dev_engine* e, int which) {
  switch (which) {
    case LRK_DEV_PARAMS:
      return &e->params;
    case LRK_DEV_GRADS:
      return &e->grads;
    case LRK_DEV_EXP_AVG:
      return &e->exp_avg;
    case LRK_DEV_EXP_AVG_SQ:
      return &e->exp_avg_sq;
    default:
      return nullptr;
  }
}

}  // namespace

extern "C" int lrk_dev_abi(void) { return LRK_DEVICE_ENGINE_ABI; }

extern "C" lrk_status lrk_dev_create(const lrk_dev_config* config, lrk_dev_engine** out) {
  if (!config || !out) return fail(LRK_INVALID_ARGUMENT, "device engine: config and out are required");
  const lrk_dev_config& c = *config;
  if (c.vocab < 1 || c.hidden < 1 || c.intermediate < 1 || c.layers < 1 || c.heads < 1 || c.kv_heads < 1 ||
      c.head_dim < 2 || c.head_dim % 2 || c.heads % c.kv_heads || !(c.rms_norm_eps >= 0))
    return fail(LRK_INVALID_ARGUMENT,
                "device engine: sizes must be positive, head_dim even and heads a multiple of kv_heads");
  auto* e = new lrk_dev_engine;
  e->c = c;
  e->window.assign(static_cast<size_t>(c.layers), 0);
  if (c.window)
    for (int64_t l = 0; l < c.layers; l++) e->window[static_cast<size_t>(l)] = c.window[l];
  e->c.window = nullptr;
  e->layers.resize(static_cast<size_t>(c.layers));
  const size_t slots = static_cast<size_t>(c.layers * kNumProj);
  e->rank.assign(slots, 0);
  e->off_a.assign(slots, 0);
  e->off_b.assign(slots, 0);
  e->off_m.assign(slots, 0);
  e->off_r.assign(slots, 0);
  e->dora.assign(slots, 0);
  e->core.assign(slots, 0);
  e->fa.resize(slots);
  e->fb.resize(slots);
  e->scale.assign(slots, 0.0f);
  *out = e;
  return LRK_OK;
}

extern "C" void lrk_dev_destroy(lrk_dev_engine* e) { delete e; }

extern "C" lrk_status lrk_dev_set_tensor(lrk_dev_engine* e, int which, int64_t layer, int proj, const void* data,
                                         lrk_dtype dtype) {
  if (!e || !data) return fail(LRK_INVALID_ARGUMENT, "set_tensor: engine and data are required");
  if (dtype != LRK_F32 && dtype != LRK_BF16) return fail(LRK_INVALID_ARGUMENT, "set_tensor: dtype must be f32 or bf16");
  const bool per_layer = which >= LRK_DEV_INPUT_NORM;
  if (per_layer && (layer < 0 || layer >= e->c.layers))
    return fail(LRK_INVALID_ARGUMENT, "set_tensor: layer out of range");
  if ((which == LRK_DEV_PROJ_W || which == LRK_DEV_PROJ_B) && (proj < 0 || proj >= kNumProj))
    return fail(LRK_INVALID_ARGUMENT, "set_tensor: proj out of range");
  const size_t width = dtype == LRK_BF16 ? 2 : 4;
  const bool matrix = which == LRK_DEV_EMBED || which == LRK_DEV_LM_HEAD || which == LRK_DEV_PROJ_W;
  if (!matrix && dtype != LRK_F32) return fail(LRK_INVALID_ARGUMENT, "set_tensor: norms and biases are f32");
  switch (which) {
    case LRK_DEV_EMBED:
      e->embed.dtype = dtype;
      return e->embed.mem.upload(data, width * static_cast<size_t>(e->c.vocab * e->c.hidden));
    case LRK_DEV_LM_HEAD:
      if (e->c.tie_word_embeddings) return fail(LRK_INVALID_ARGUMENT, "set_tensor: the head is tied to the embedding");
      e->lm_head.dtype = dtype;
      return e->lm_head.mem.upload(data, width * static_cast<size_t>(e->c.vocab * e->c.hidden));
    case LRK_DEV_NORM:
      return e->norm.upload(data, f32_bytes(e->c.hidden));
    case LRK_DEV_INPUT_NORM:
      return e->layers[static_cast<size_t>(layer)].input_norm.upload(data, f32_bytes(e->c.hidden));
    case LRK_DEV_POST_NORM:
      return e->layers[static_cast<size_t>(layer)].post_norm.upload(data, f32_bytes(e->c.hidden));
    case LRK_DEV_PROJ_W: {
      Weight& w = e->layers[static_cast<size_t>(layer)].w[proj];
      w.dtype = dtype;
      return w.mem.upload(data, width * static_cast<size_t>(e->proj_out(proj) * e->proj_in(proj)));
    }
    case LRK_DEV_PROJ_B:
      if (!e->c.proj_bias[proj]) return fail(LRK_INVALID_ARGUMENT, "set_tensor: this projection has no bias");
      return e->layers[static_cast<size_t>(layer)].b[proj].upload(data, f32_bytes(e->proj_out(proj)));
    default:
      return fail(LRK_INVALID_ARGUMENT, "set_tensor: unknown tensor kind " + std::to_string(which));
  }
}

extern "C" lrk_status lrk_dev_set_rope(lrk_dev_engine* e, int64_t npos, const float* cos, const float* sin) {
  if (!e || npos < 1 || !cos || !sin) return fail(LRK_INVALID_ARGUMENT, "set_rope: npos >= 1 and both tables");
  const size_t bytes = f32_bytes(npos * (e->c.head_dim / 2));
  if (lrk_status s = e->cos.upload(cos, bytes)) return s;
  if (lrk_status s = e->sin.upload(sin, bytes)) return s;
  e->npos = npos;
  return LRK_OK;
}

extern "C" lrk_status lrk_dev_set_adapter(lrk_dev_engine* e, const int64_t* ranks, const float* scales,
                                          const int* dora, const int* core) {
  if (!e || !ranks || !scales) return fail(LRK_INVALID_ARGUMENT, "set_adapter: ranks and scales are required");
  const size_t slots = e->rank.size();
  int64_t total = 0;
  std::vector<int64_t> toff, tsize;
  // One packed tensor (offset, size) of the state, in the CPU optimizer's order.
  auto pack = [&](int64_t size) {
    toff.push_back(total);
    tsize.push_back(size);
    total += size;
    return toff.back();
  };
  for (size_t s = 0; s < slots; s++) {
    if (ranks[s] < 0) return fail(LRK_INVALID_ARGUMENT, "set_adapter: a rank is negative");
    const int p = static_cast<int>(s % kNumProj);
    e->rank[s] = ranks[s];
    e->scale[s] = scales[s];
    e->dora[s] = ranks[s] > 0 && dora && dora[s] ? 1 : 0;
    e->core[s] = ranks[s] > 0 && core && core[s] ? 1 : 0;
    e->fa[s].reset();
    e->fb[s].reset();
    if (ranks[s] == 0) continue;
    if (e->dora[s] && e->core[s]) return fail(LRK_INVALID_ARGUMENT, "set_adapter: a module cannot be DoRA and have a core");
    if (e->core[s]) {  // LoRA-SB: R alone trains
      e->off_r[s] = pack(ranks[s] * ranks[s]);
      continue;
    }
    e->off_a[s] = pack(ranks[s] * e->proj_in(p));
    e->off_b[s] = pack(ranks[s] * e->proj_out(p));
    if (e->dora[s]) e->off_m[s] = pack(e->proj_out(p));
  }
  e->num_params = total;
  e->tensor_off = toff;
  e->tensor_size = tsize;
  for (DevMem* m : {&e->params, &e->grads, &e->exp_avg, &e->exp_avg_sq}) {
    if (lrk_status s = m->alloc(f32_bytes(total))) return s;
    if (lrk_status s = m->zero()) return s;
  }
  if (lrk_status s = e->d_tensor_off.upload(toff.data(), toff.size() * sizeof(int64_t))) return s;
  if (lrk_status s = e->d_tensor_size.upload(tsize.data(), tsize.size() * sizeof(int64_t))) return s;
  if (lrk_status s = e->d_sums.alloc(toff.size() * sizeof(double))) return s;
  e->rows = e->seq = 0;  // the LoRA activations follow the ranks
  e->dropout_bufs = false;
  return LRK_OK;
}

extern "C" lrk_status lrk_dev_set_factors(lrk_dev_engine* e, int64_t layer, int proj, const float* a, const float* b) {
  if (!e || !a || !b || layer < 0 || layer >= e->c.layers || proj < 0 || proj >= kNumProj)
    return fail(LRK_INVALID_ARGUMENT, "set_factors: engine, layer, projection in range, A and B");
  const size_t s = e->slot(layer, proj);
  if (!e->core[s]) return fail(LRK_INVALID_ARGUMENT, "set_factors: the module has no core (set_adapter's core flag)");
  const int64_t r = e->rank[s];
  if (lrk_status st = e->fa[s].upload(a, f32_bytes(r * e->proj_in(proj)))) return st;
  return e->fb[s].upload(b, f32_bytes(e->proj_out(proj) * r));
}

extern "C" lrk_status lrk_dev_set_matmul(lrk_dev_engine* e, int bf16, int* effective) {
  if (!e) return fail(LRK_INVALID_ARGUMENT, "set_matmul: engine is null");
  if (bf16 != 0 && bf16 != 1) return fail(LRK_INVALID_ARGUMENT, "set_matmul: bf16 must be 0 or 1");
  e->matmul = bf16 ? Matmul::bf16 : Matmul::fp32;
  bool any_bf16 = e->embed.dtype == LRK_BF16 || (!e->c.tie_word_embeddings && e->lm_head.dtype == LRK_BF16);
  for (const auto& layer : e->layers)
    for (const Weight& w : layer.w) any_bf16 = any_bf16 || w.dtype == LRK_BF16;
  if (effective) *effective = bf16 && blas_in_use() && any_bf16 ? 1 : 0;
  return LRK_OK;
}

extern "C" lrk_status lrk_dev_set_recompute(lrk_dev_engine* e, int on) {
  if (!e) return fail(LRK_INVALID_ARGUMENT, "set_recompute: engine is null");
  if (e->recompute != (on != 0)) {
    e->recompute = on != 0;
    e->acts.clear();
    e->layer_in.clear();
    e->rows = e->seq = 0;  // reallocate on the next step
    e->dropout_bufs = false;
  }
  return LRK_OK;
}

extern "C" int64_t lrk_dev_num_params(const lrk_dev_engine* e) { return e ? e->num_params : 0; }

extern "C" lrk_status lrk_dev_read(lrk_dev_engine* e, int which, float* host, int64_t n) {
  DevMem* m = e ? state_buffer(e, which) : nullptr;
  if (!m || !host || n != e->num_params)
    return fail(LRK_INVALID_ARGUMENT, "read: a state buffer of lrk_dev_num_params floats");
  if (n) LRK_CUDA_TRY(cudaMemcpy(host, m->as(), f32_bytes(n), cudaMemcpyDeviceToHost));
  return LRK_OK;
}

extern "C" lrk_status lrk_dev_write(lrk_dev_engine* e, int which, const float* host, int64_t n) {
  DevMem* m = e ? state_buffer(e, which) : nullptr;
  if (!m || !host || n != e->num_params)
    return fail(LRK_INVALID_ARGUMENT, "write: a state buffer of lrk_dev_num_params floats");
  if (n) LRK_CUDA_TRY(cudaMemcpy(m->as(), host, f32_bytes(n), cudaMemcpyHostToDevice));
  return LRK_OK;
}

extern "C" lrk_status lrk_dev_zero_grad(lrk_dev_engine* e) {
  if (!e) return fail(LRK_INVALID_ARGUMENT, "zero_grad: engine is null");
  return e->grads.zero();
}

namespace {

// One micro-batch: forward and loss, then (backward) the gradients of loss_scale · Σ loss.
lrk_status run_batch(lrk_dev_engine* e, const lrk_dev_batch* batch, float loss_scale, float dropout,
                     uint64_t dropout_seed, const uint64_t* dropout_streams, double* loss_sum, int64_t* count,
                     bool backward) {
  if (!e || !batch || !loss_sum || !count) return fail(LRK_INVALID_ARGUMENT, "forward_backward: null argument");
  if (lrk_status s = ready(e)) return s;
  const MatmulScope matmul(e->matmul);
  const lrk_dev_config& c = e->c;
  const int64_t rows = batch->rows, T = batch->seq, n = rows * T, d = c.hidden, V = c.vocab;
  if (rows < 1 || T < 1 || !batch->tokens || !batch->targets || !batch->pos || !batch->doc_start)
    return fail(LRK_INVALID_ARGUMENT, "forward_backward: a batch needs rows, seq >= 1 and all four arrays");
  if (T > 8192) return fail(LRK_INVALID_ARGUMENT, "forward_backward: sequences of at most 8192 tokens");
  if (!(dropout >= 0.0f && dropout < 1.0f)) return fail(LRK_INVALID_ARGUMENT, "forward_backward: dropout in [0, 1)");
  if (dropout > 0.0f && !dropout_streams)
    return fail(LRK_INVALID_ARGUMENT, "forward_backward: dropout needs one stream per (layer, proj)");
  for (int64_t i = 0; i < n; i++) {
    if (batch->tokens[i] < 0 || batch->tokens[i] >= V)
      return fail(LRK_INVALID_ARGUMENT, "forward_backward: token " + std::to_string(i) + " is outside the vocabulary");
    if (batch->targets[i] != kIgnore && (batch->targets[i] < 0 || batch->targets[i] >= V))
      return fail(LRK_INVALID_ARGUMENT, "forward_backward: target " + std::to_string(i) + " is neither -100 nor a token");
    if (batch->pos[i] < 0 || batch->pos[i] >= e->npos)
      return fail(LRK_INVALID_ARGUMENT, "forward_backward: a position is outside the RoPE tables (set_rope)");
    if (batch->doc_start[i] < 0 || batch->doc_start[i] > i % T)
      return fail(LRK_INVALID_ARGUMENT, "forward_backward: a document start is after its token");
  }
  if (lrk_status s = ensure_buffers(e, rows, T, dropout > 0.0f)) return s;
  LRK_CUDA_TRY(cudaMemcpy(e->tokens.as(), batch->tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice));
  LRK_CUDA_TRY(cudaMemcpy(e->targets.as(), batch->targets, n * sizeof(int32_t), cudaMemcpyHostToDevice));
  LRK_CUDA_TRY(cudaMemcpy(e->pos.as(), batch->pos, n * sizeof(int64_t), cudaMemcpyHostToDevice));
  LRK_CUDA_TRY(cudaMemcpy(e->doc_start.as(), batch->doc_start, n * sizeof(int64_t), cudaMemcpyHostToDevice));
  const StepCtx k{e, n, dropout, dropout_seed, dropout_streams};

  embed_gather_dev(n, d, e->tokens.as<int32_t>(), e->embed.mem.as<void>(), e->embed.dtype, e->input(0));
  for (int64_t l = 0; l < c.layers; l++) layer_forward(k, l, l + 1 == c.layers ? e->fin.as() : e->input(l + 1));
  rmsnorm_forward_dev(n, d, c.rms_norm_eps, e->fin.as(), e->norm.as(), e->xf.as(), e->rstdf.as());
  const Weight& head = c.tie_word_embeddings ? e->embed : e->lm_head;
  // The head, the loss and (training) the head's input gradient, a chunk of tokens at a
  // time: the chunk's logits become its gradient in place, then dx rows = dlogits · head.
  for (int64_t i0 = 0; i0 < n; i0 += e->logits_rows) {
    const int64_t m = std::min(e->logits_rows, n - i0);
    float* z = e->logits.as();
    lora_forward_dev(m, d, V, 0, 0.0f, e->xf.as() + i0 * d, nullptr, head.mem.as<void>(), head.dtype, nullptr,
                     nullptr, z, nullptr);
    cross_entropy_dev(m, V, z, e->targets.as<int32_t>() + i0, loss_scale, e->row_loss.as() + i0, z);
    if (backward)
      lora_backward_dev(m, d, V, 0, 0.0f, nullptr, nullptr, z, head.mem.as<void>(), head.dtype, nullptr, nullptr,
                        e->dx.as() + i0 * d, false, nullptr, nullptr, nullptr, nullptr, nullptr);
  }
  LRK_CUDA_SYNC("device engine forward");
  e->host_loss.resize(static_cast<size_t>(n));
  LRK_CUDA_TRY(cudaMemcpy(e->host_loss.data(), e->row_loss.as(), f32_bytes(n), cudaMemcpyDeviceToHost));
  double sum = 0;
  int64_t cnt = 0;
  for (int64_t i = 0; i < n; i++) {
    if (batch->targets[i] == kIgnore) continue;
    sum += e->host_loss[static_cast<size_t>(i)];
    cnt++;
  }

  *loss_sum = sum;
  *count = cnt;
  if (!backward) return LRK_OK;
  // Backward (the head's part ran with the loss): the final norm → each layer from the top.
  rmsnorm_backward_dev(n, d, e->fin.as(), e->norm.as(), e->rstdf.as(), e->dx.as(), e->dres.as(), 0);
  for (int64_t l = c.layers - 1; l >= 0; l--) {
    if (e->recompute) layer_forward(k, l, e->recompute_out.as());  // the activations this layer's backward reads
    layer_backward(k, l);
  }
  LRK_CUDA_SYNC("device engine backward");
  return LRK_OK;
}

}  // namespace

extern "C" lrk_status lrk_dev_forward_backward(lrk_dev_engine* e, const lrk_dev_batch* batch, float loss_scale,
                                               float dropout, uint64_t dropout_seed, const uint64_t* dropout_streams,
                                               double* loss_sum, int64_t* count) {
  return run_batch(e, batch, loss_scale, dropout, dropout_seed, dropout_streams, loss_sum, count, true);
}

extern "C" lrk_status lrk_dev_forward(lrk_dev_engine* e, const lrk_dev_batch* batch, double* loss_sum,
                                      int64_t* count) {
  return run_batch(e, batch, 1.0f, 0.0f, 0, nullptr, loss_sum, count, false);
}

extern "C" lrk_status lrk_dev_optimizer_step(lrk_dev_engine* e, double max_grad_norm, double lr, double beta1,
                                             double beta2, double eps, double weight_decay, int64_t t,
                                             double* grad_norm) {
  if (!e || !grad_norm) return fail(LRK_INVALID_ARGUMENT, "optimizer_step: null argument");
  if (t < 1 || !(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps > 0) || !(lr >= 0))
    return fail(LRK_INVALID_ARGUMENT, "optimizer_step: t >= 1, betas in [0, 1), eps > 0, lr >= 0");
  if (e->num_params == 0) return fail(LRK_INVALID_ARGUMENT, "optimizer_step: no adapter");
  const int64_t tensors = static_cast<int64_t>(e->tensor_off.size());
  sum_squares_dev(tensors, e->d_tensor_off.as<int64_t>(), e->d_tensor_size.as<int64_t>(), e->grads.as(),
                  e->d_sums.as<double>());
  LRK_CUDA_SYNC("grad norm");
  std::vector<double> sums(static_cast<size_t>(tensors));
  LRK_CUDA_TRY(cudaMemcpy(sums.data(), e->d_sums.as(), sums.size() * sizeof(double), cudaMemcpyDeviceToHost));
  // optim.cc: the norm of the per-tensor fp32 norms, in packed (layer, proj, A, B) order.
  double sq = 0;
  for (double s : sums) {
    const auto tn = static_cast<float>(std::sqrt(s));
    sq += static_cast<double>(tn) * tn;
  }
  *grad_norm = std::sqrt(sq);
  if (max_grad_norm > 0) {
    const double coef = std::min(1.0, max_grad_norm / (static_cast<double>(static_cast<float>(*grad_norm)) + 1e-6));
    scale_dev(e->num_params, static_cast<float>(coef), e->grads.as());
  }
  adamw_dev(e->num_params, e->params.as(), e->grads.as(), e->exp_avg.as(), e->exp_avg_sq.as(), lr, beta1, beta2, eps,
            weight_decay, t);
  LRK_CUDA_SYNC("clip and AdamW");
  return LRK_OK;
}

// Generation (Engine::generate's forward on the device): the layers over a step's new tokens,
// their keys and values stored into the caches, attention against the cached prefix.
extern "C" lrk_status lrk_dev_generate_begin(lrk_dev_engine* e, int64_t rows, int64_t max_len) {
  if (!e || rows < 1 || max_len < 1) return fail(LRK_INVALID_ARGUMENT, "generate_begin: rows, max_len >= 1");
  if (max_len > 8192) return fail(LRK_INVALID_ARGUMENT, "generate_begin: at most 8192 positions (the attention kernel's limit)");
  if (max_len > e->npos) return fail(LRK_INVALID_ARGUMENT, "generate_begin: max_len exceeds the RoPE tables (set_rope)");
  if (lrk_status s = ready(e)) return s;
  e->kc.clear();
  e->vc.clear();
  e->kc.resize(static_cast<size_t>(e->c.layers));
  e->vc.resize(static_cast<size_t>(e->c.layers));
  for (std::vector<DevMem>* cache : {&e->kc, &e->vc})
    for (DevMem& m : *cache) {
      if (lrk_status s = m.alloc(f32_bytes(rows * max_len * e->kv_dim()))) return s;
      if (lrk_status s = m.zero()) return s;
    }
  if (lrk_status s = e->gen_logits.alloc(f32_bytes(rows * e->c.vocab))) return s;
  e->gen_rows = rows;
  e->gen_len = max_len;
  return LRK_OK;
}

extern "C" void lrk_dev_generate_end(lrk_dev_engine* e) {
  if (!e) return;
  e->kc.clear();
  e->vc.clear();
  e->gen_logits.reset();
  e->gen_rows = e->gen_len = 0;
}

extern "C" lrk_status lrk_dev_generate_step(lrk_dev_engine* e, int64_t t, int64_t p0, const int32_t* tokens,
                                            const int64_t* pos, const int64_t* key_start, float* logits) {
  if (!e || !tokens || !pos || !key_start || !logits) return fail(LRK_INVALID_ARGUMENT, "generate_step: null argument");
  if (e->gen_rows == 0) return fail(LRK_INVALID_ARGUMENT, "generate_step: call generate_begin first");
  const lrk_dev_config& c = e->c;
  const int64_t rows = e->gen_rows, L = e->gen_len, n = rows * t, d = c.hidden, V = c.vocab;
  const int64_t qd = e->q_dim(), kvd = e->kv_dim();
  if (t < 1 || p0 < 0 || p0 + t > L) return fail(LRK_INVALID_ARGUMENT, "generate_step: t >= 1 new positions within the caches");
  for (int64_t i = 0; i < n; i++) {
    if (tokens[i] < 0 || tokens[i] >= V)
      return fail(LRK_INVALID_ARGUMENT, "generate_step: token " + std::to_string(i) + " is outside the vocabulary");
    if (pos[i] < 0 || pos[i] >= e->npos) return fail(LRK_INVALID_ARGUMENT, "generate_step: a position is outside the RoPE tables");
    if (key_start[i] < 0 || key_start[i] > p0 + i % t)
      return fail(LRK_INVALID_ARGUMENT, "generate_step: a first key is after its token");
  }
  if (lrk_status s = ensure_buffers(e, rows, t, false)) return s;
  LRK_CUDA_TRY(cudaMemcpy(e->tokens.as(), tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice));
  LRK_CUDA_TRY(cudaMemcpy(e->pos.as(), pos, n * sizeof(int64_t), cudaMemcpyHostToDevice));
  LRK_CUDA_TRY(cudaMemcpy(e->doc_start.as(), key_start, n * sizeof(int64_t), cudaMemcpyHostToDevice));
  const MatmulScope matmul(e->matmul);
  const StepCtx k{e, n, 0.0f, 0, nullptr};
  float* x = e->fin.as();  // the residual stream [n, d]
  embed_gather_dev(n, d, e->tokens.as<int32_t>(), e->embed.mem.as<void>(), e->embed.dtype, x);
  for (int64_t l = 0; l < c.layers; l++) {
    LayerActs& a = e->act(l);
    const LayerWeights& w = e->layers[static_cast<size_t>(l)];
    rmsnorm_forward_dev(n, d, c.rms_norm_eps, x, w.input_norm.as(), a.x1.as(), a.rstd1.as());
    linear_forward(k, l, kQ, a.x1.as(), a.q.as());
    linear_forward(k, l, kK, a.x1.as(), a.k.as());
    linear_forward(k, l, kV, a.x1.as(), a.v.as());
    rope_apply_dev(a.q.as(), n, qd, c.heads, c.head_dim, e->pos.as<int64_t>(), e->cos.as(), e->sin.as(), 0);
    rope_apply_dev(a.k.as(), n, kvd, c.kv_heads, c.head_dim, e->pos.as<int64_t>(), e->cos.as(), e->sin.as(), 0);
    float* K = e->kc[static_cast<size_t>(l)].as();
    float* Vc = e->vc[static_cast<size_t>(l)].as();
    rows_store_dev(rows, t, kvd, L, p0, a.k.as(), K);
    rows_store_dev(rows, t, kvd, L, p0, a.v.as(), Vc);
    for (int64_t b = 0; b < rows; b++)
      attention_cached_dev(t, p0, c.heads, c.kv_heads, c.head_dim, e->window[static_cast<size_t>(l)],
                           e->doc_start.as<int64_t>() + b * t, a.q.as() + b * t * qd, K + b * L * kvd,
                           Vc + b * L * kvd, a.ao.as() + b * t * qd);
    linear_forward(k, l, kO, a.ao.as(), e->tmpd.as());
    add_dev(n * d, x, e->tmpd.as(), x);
    rmsnorm_forward_dev(n, d, c.rms_norm_eps, x, w.post_norm.as(), a.x2.as(), a.rstd2.as());
    linear_forward(k, l, kGate, a.x2.as(), a.gate.as());
    linear_forward(k, l, kUp, a.x2.as(), a.up.as());
    swiglu_forward_dev(n * c.intermediate, a.gate.as(), a.up.as(), a.act.as());
    linear_forward(k, l, kDown, a.act.as(), e->tmpd.as());
    add_dev(n * d, x, e->tmpd.as(), x);
  }
  // Each row's last new token: the final norm and the head.
  rows_last_dev(rows, t, d, x, e->dx.as());
  rmsnorm_forward_dev(rows, d, c.rms_norm_eps, e->dx.as(), e->norm.as(), e->xf.as(), e->rstdf.as());
  const Weight& head = c.tie_word_embeddings ? e->embed : e->lm_head;
  lora_forward_dev(rows, d, V, 0, 0.0f, e->xf.as(), nullptr, head.mem.as<void>(), head.dtype, nullptr, nullptr,
                   e->gen_logits.as(), nullptr);
  LRK_CUDA_SYNC("generate_step");
  LRK_CUDA_TRY(cudaMemcpy(logits, e->gen_logits.as(), f32_bytes(rows * V), cudaMemcpyDeviceToHost));
  return LRK_OK;
}
