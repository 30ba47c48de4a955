// The training engine in the style of llm.c: an explicit forward and backward pass per
// layer over preallocated activations, BLAS for every GEMM, a frozen fp32 base and LoRA
// adapters (A [r, in], B [out, r], y = Wx + b + s·B(Ax), METHODS §1.1) on any subset of
// the seven projections. Gradients flow only to the adapters.
//
// Threads and determinism: the engine's pool (parallel.h) cuts every GEMM into per-thread
// blocks of single-threaded OpenBLAS calls and runs the row loops and attention tasks;
// every other reduction is per row in a fixed order and per-row results are summed
// serially, so a run is bit-reproducible for a given pool thread count.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model.h"

namespace lowrank::train {

/**
 * One adapted projection: factors, their gradients and the AdamW moments. DoRA (METHODS
 * §1.3, PEFT semantics) adds the magnitude m [out]: y = b + (m/n) ⊙ (Wx + s·BAx) with
 * n = ‖W + s·BA‖ per output row, detached (no gradient through n).
 */
struct LoraSlot {
  int64_t r = 0;  // 0: no adapter on this projection
  float scale = 0;
  std::vector<float> a, b;      // [r, in], [out, r]
  std::vector<float> ga, gb;    // gradients, accumulated until zero_grad
  std::vector<float> ma, va, mb, vb;  // AdamW first/second moments
  bool dora = false;
  std::vector<float> m, gm, mm, vm;  // DoRA magnitude, its gradient and moments
  mutable std::vector<float> norm;   // DoRA: n of the last forward [out]
  // LoRA-SB / LoRA-XS (METHODS §1.7): ΔW = s·B R A with A and B frozen and only the
  // r×r core R trained (y = Wx + b + s·B(R(Ax)); ∂L/∂R = s (dY B)ᵀ (X Aᵀ)).
  bool core = false;
  std::vector<float> rc, grc, mrc, vrc;  // R [r, r], its gradient and AdamW moments
};

/**
 * A batch of B equal-length rows of T tokens; labels as transformers (-100 = ignored),
 * unshifted. Packing: `segments` (optional) gives each token its document within the row
 * (non-decreasing); a document attends only to itself, its positions restart at 0, and
 * no token predicts the next document's first token.
 */
struct Batch {
  const int32_t* tokens = nullptr;
  const int32_t* labels = nullptr;    // may be null: forward only, no loss
  const int32_t* segments = nullptr;  // may be null: one document per row
  int64_t rows = 0, seq = 0;
};

/** Whether position t of a row is a labelled prediction target (t + 1 in the same document). */
inline bool predicts(const Batch& b, int64_t row, int64_t t) {
  const int64_t i = row * b.seq + t;
  return t + 1 < b.seq && b.labels[i + 1] != -100 && (!b.segments || b.segments[i + 1] == b.segments[i]);
}

/** Decoding options: temperature 0 = greedy (argmax, first index on ties, as torch). */
struct SampleOptions {
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  int32_t eos = -1;  // >= 0: a row that emits it repeats it from then on
};

struct LossSum {
  double sum = 0;      // Σ over predicted tokens of −log p(label)
  int64_t count = 0;   // tokens with a label (after the causal shift)
};

class Engine {
 public:
  explicit Engine(std::shared_ptr<const Model> model);
  const Model& model() const { return *model_; }

  /** Puts an adapter on (layer, proj) with copies of A and B (and the DoRA magnitude [out] when given); r = 0 removes it. */
  void set_lora(int64_t layer, int proj, int64_t r, float scale, const float* a, const float* b,
                const float* magnitude = nullptr);
  /**
   * Makes (layer, proj)'s adapter (set by set_lora, not DoRA) a LoRA-SB one: A and B freeze,
   * the core R [r, r] (a copy) is its only trainable tensor.
   */
  void set_lora_core(int64_t layer, int proj, const float* r_core);
  const LoraSlot& slot(int64_t layer, int proj) const { return slots_[static_cast<size_t>(layer)][proj]; }
  LoraSlot& slot(int64_t layer, int proj) { return slots_[static_cast<size_t>(layer)][proj]; }
  int64_t num_trainable() const;

  /**
   * Replaces a projection's frozen weight W [out, in] for this engine only (PiSSA-style
   * inits train on W_res = W − s·B0·A0); nullptr restores the model's. The model itself
   * is shared and never changes.
   */
  void set_base_weight(int64_t layer, int proj, const float* w);
  /** The weight the engine uses for (layer, proj): the override or the model's. */
  const float* base_weight(int64_t layer, int proj) const;

  /**
   * Forward pass; stores what backward needs. With labels, returns the summed causal-LM
   * loss (position t predicts labels[t + 1]). logits_out, when given, receives [rows·seq, vocab].
   */
  LossSum forward(const Batch& batch, float* logits_out = nullptr);

  /**
   * LoRA dropout (PEFT's lora_dropout, on the adapter's input only): p in [0, 1), masks drawn
   * from Philox(seed, stream "dropout:<module>:<step>:<micro>") so a resumed run redraws
   * them. Applies to forwards in training mode (set_training); on DoRA modules as PEFT does,
   * with W·drop(x) recomputed.
   */
  void set_dropout(float p, uint64_t seed);
  /** Training mode for the next forwards: dropout masks of (step, micro-batch index). */
  void set_training(bool on, int64_t step = 0, int64_t micro = 0);
  /** The mask (0 or 1/(1-p)) the engine draws for a module's n × in input in training mode. */
  std::vector<float> dropout_mask(int64_t layer, int proj, int64_t step, int64_t micro, int64_t n) const;
  float dropout() const { return dropout_p_; }
  uint64_t dropout_seed() const { return dropout_seed_; }

  /**
   * Activation recomputation: keep only each layer's input and recompute the layer's
   * forward during the backward (one layer's activations in memory instead of all).
   * Results are bit-identical either way.
   */
  void set_recompute(bool on);
  bool recompute() const { return recompute_; }

  /**
   * Frozen-weight gradients (METHODS P17, for LoRA-GA and LoRA-SB): while on for (layer,
   * proj), every backward adds that projection's ∂L/∂W = dYᵀ X [out, in] (fp32, the
   * backward's loss scale included) into a buffer of its own; zero_grad leaves it alone,
   * turning it off frees it. Independent of any adapter on the projection.
   */
  void set_weight_grad(int64_t layer, int proj, bool on);
  /** The accumulated ∂L/∂W of (layer, proj) [out, in]; empty when capture is off. */
  const std::vector<float>& weight_grad(int64_t layer, int proj) const {
    return wgrad_[static_cast<size_t>(layer)][proj];
  }

  /**
   * The input X [rows·seq, in] of a projection in the last forward (EVA's activations,
   * METHODS P18): pre-dropout, as the base weight sees it. Needs recomputation off.
   */
  const float* module_input(int64_t layer, int proj, int64_t* n) const;

  /** Backward of loss_scale · (the last forward's loss sum); adds into the adapters' ga/gb. */
  void backward(float loss_scale);

  void zero_grad();

  /**
   * Continues `rows` prompts of prompt_len tokens each by max_new tokens with a KV cache
   * (prefill once, then one position per step), adapters applied. Returns [rows, max_new].
   * left_pad[b] (optional) pad tokens start row b: they are never attended to and the
   * row's positions start after them, as transformers with a left-padded attention_mask.
   * Sampling draws Philox(seed, stream "sample", row · max_new + step): reproducible, never
   * PyTorch's RNG.
   */
  std::vector<int32_t> generate(const int32_t* prompt, int64_t rows, int64_t prompt_len, int64_t max_new,
                                const SampleOptions& o, const int64_t* left_pad = nullptr) const;

 private:
  struct LayerActs {
    std::vector<float> in, x1, rstd1, q, k, v, att, ao, mid, x2, rstd2, gate, up, act;
    std::array<std::vector<float>, kNumProj> h;  // x·Aᵀ [N, r] per adapted projection
    std::array<std::vector<float>, kNumProj> z;  // DoRA: Wx + s·BAx [N, out] (before m/n)
    std::array<std::vector<float>, kNumProj> xd;  // dropout: the adapter's masked input [N, in]
    std::array<std::vector<float>, kNumProj> mask;  // dropout: its mask (0 or 1/(1-p)) [N, in]
  };

  void ensure_buffers(int64_t rows, int64_t seq);
  /** Layer l's activations: its own, or the shared scratch when recomputing. */
  LayerActs& act(int64_t l) { return acts_[recompute_ ? 0 : static_cast<size_t>(l)]; }
  /** Forward of layer l from act(l).in (filled here from layer_in_ when recomputing) to `out`. */
  void layer_forward(int64_t l, float* out);
  void linear_forward(int64_t layer, int p, const float* x, int64_t n, float* y, float* h, float* z = nullptr,
                      float* xd = nullptr, float* mask = nullptr) const;
  void linear_backward(int64_t layer, int p, const float* x, const float* h, const float* dy, int64_t n, float* dx,
                       bool accumulate);
  void dora_dropout_backward(int64_t layer, int p, const float* x, const float* h, const float* dy, int64_t n, float* dx,
                             bool accumulate);
  void attention_forward(int64_t layer);
  void attention_backward(int64_t layer, const float* dao);

  std::shared_ptr<const Model> model_;
  std::vector<std::array<LoraSlot, kNumProj>> slots_;
  std::vector<std::array<std::vector<float>, kNumProj>> base_override_;

  int64_t rows_ = 0, seq_ = 0;  // shape the buffers are sized for
  bool have_labels_ = false;
  float dropout_p_ = 0.0f;
  uint64_t dropout_seed_ = 0;
  bool training_ = false;
  int64_t train_step_ = 0, train_micro_ = 0;
  bool dropout_active() const { return training_ && dropout_p_ > 0.0f; }
  std::vector<int32_t> labels_;  // shifted: target of position t, or -100
  std::vector<LayerActs> acts_;
  bool recompute_ = false;
  std::vector<std::vector<float>> layer_in_;
  std::vector<std::array<std::vector<float>, kNumProj>> wgrad_;  // set_weight_grad buffers  // recompute: each layer's input [N, hidden]
  std::vector<float> recompute_out_;
  std::vector<float> fin_, xf_, rstdf_, logits_, row_loss_, row_lse_;
  std::vector<float> cos_, sin_;  // [seq, head_dim / 2]
  std::vector<int64_t> pos_;       // [N] position of each token within its document
  std::vector<int64_t> doc_start_;  // [N] row index of its document's first token
  // backward scratch
  std::vector<float> dres_, dx_, dq_, dk_, dv_, dao_, dgate_, dup_, dact_, g_, tmp_, dyg_;
};

}  // namespace lowrank::train
