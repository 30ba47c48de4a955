// Forward and backward of the Llama-family decoder with LoRA (see engine.h).
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lowrank/error.h"
#include "lowrank/linalg.h"
#include "lowrank/rng.h"
#include "parallel.h"
#include "rope.h"

namespace lowrank::train {

namespace {

constexpr int32_t kIgnore = -100;

template <typename T>
void fit(std::vector<T>& v, int64_t n) {
  v.assign(static_cast<size_t>(n), T{});
}

// y = w ⊙ x·rstd, rstd = (mean(x²) + eps)^-½ per row (transformers LlamaRMSNorm, fp32).
void rmsnorm_forward(const float* x, const float* w, int64_t n, int64_t d, double eps, float* y, float* rstd) {
  parallel_for_work(n * d, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float* xi = x + i * d;
      double ss = 0;
      for (int64_t j = 0; j < d; j++) ss += static_cast<double>(xi[j]) * xi[j];
      const auto r = static_cast<float>(1.0 / std::sqrt(static_cast<double>(static_cast<float>(ss / d)) + eps));
      rstd[i] = r;
      float* yi = y + i * d;
      for (int64_t j = 0; j < d; j++) yi[j] = w[j] * (xi[j] * r);
    }
  });
}

// dx (+)= rstd·(w⊙dy) − x·rstd³/d·Σ(w⊙dy⊙x).
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t n, int64_t d, float* dx,
                      bool accumulate) {
  parallel_for_work(n * d, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float* xi = x + i * d;
      const float* gi = dy + i * d;
      double dot = 0;
      for (int64_t j = 0; j < d; j++) dot += static_cast<double>(w[j]) * gi[j] * xi[j];
      const float r = rstd[i];
      const auto c = static_cast<float>(dot * r * r * r / static_cast<double>(d));
      float* o = dx + i * d;
      for (int64_t j = 0; j < d; j++) {
        const float v = r * (w[j] * gi[j]) - xi[j] * c;
        o[j] = accumulate ? o[j] + v : v;
      }
    }
  });
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// log Σ exp(z) of one row: max-shifted, summed in double.
float log_sum_exp(const float* z, int64_t n) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; j++) mx = std::max(mx, z[j]);
  double sum = 0;
  for (int64_t j = 0; j < n; j++) sum += std::exp(z[j] - mx);
  return static_cast<float>(std::log(sum) + mx);
}

// Row-wise softmax of scores [T, T] over keys j <= i (and i - j < window when window > 0,
// and j >= the start of i's document), zero elsewhere.
void causal_softmax(float* P, int64_t T, int64_t window, const int64_t* doc_start) {
  for (int64_t i = 0; i < T; i++) {
    float* row = P + i * T;
    const int64_t lo = std::max<int64_t>(window > 0 ? i - window + 1 : 0, doc_start[i]);
    float mx = -INFINITY;
    for (int64_t j = lo; j <= i; j++) mx = std::max(mx, row[j]);
    double sum = 0;
    for (int64_t j = lo; j <= i; j++) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    const auto inv = static_cast<float>(1.0 / sum);
    for (int64_t j = 0; j < lo; j++) row[j] = 0.0f;
    for (int64_t j = lo; j <= i; j++) row[j] *= inv;
    for (int64_t j = i + 1; j < T; j++) row[j] = 0.0f;
  }
}

}  // namespace

Engine::Engine(std::shared_ptr<const Model> model) : model_(std::move(model)) {
  slots_.resize(static_cast<size_t>(model_->cfg.num_layers));
  base_override_.resize(static_cast<size_t>(model_->cfg.num_layers));
  wgrad_.resize(static_cast<size_t>(model_->cfg.num_layers));
}

void Engine::set_weight_grad(int64_t layer, int proj, bool on) {
  const ModelConfig& c = model_->cfg;
  if (layer < 0 || layer >= c.num_layers || proj < 0 || proj >= kNumProj) {
    throw Error("invalid_argument", "weight gradient: layer or projection out of range");
  }
  std::vector<float>& g = wgrad_[static_cast<size_t>(layer)][proj];
  if (on) {
    g.assign(static_cast<size_t>(c.proj_out(proj) * c.proj_in(proj)), 0.0f);
  } else {
    std::vector<float>().swap(g);
  }
}

const float* Engine::module_input(int64_t layer, int proj, int64_t* n) const {
  const ModelConfig& c = model_->cfg;
  if (layer < 0 || layer >= c.num_layers || proj < 0 || proj >= kNumProj) {
    throw Error("invalid_argument", "module input: layer or projection out of range");
  }
  if (recompute_) throw Error("invalid_argument", "module inputs are not kept under activation recomputation");
  if (rows_ == 0) throw Error("invalid_argument", "module inputs: run a forward first");
  const LayerActs& a = acts_[static_cast<size_t>(layer)];
  *n = rows_ * seq_;
  switch (proj) {
    case kQ:
    case kK:
    case kV:
      return a.x1.data();
    case kO:
      return a.ao.data();
    case kGate:
    case kUp:
      return a.x2.data();
    default:
      return a.act.data();
  }
}

void Engine::set_lora(int64_t layer, int proj, int64_t r, float scale, const float* a, const float* b,
                      const float* magnitude) {
  const ModelConfig& c = model_->cfg;
  if (layer < 0 || layer >= c.num_layers) {
    throw Error("invalid_argument", "adapter layer " + std::to_string(layer) + " is out of range (the model has " +
                                        std::to_string(c.num_layers) + " layers)");
  }
  if (proj < 0 || proj >= kNumProj) throw Error("invalid_argument", "adapter projection index out of range");
  if (r < 0) throw Error("invalid_argument", module_path(layer, proj) + ": rank must be >= 0");
  LoraSlot& s = slot(layer, proj);
  s = LoraSlot{};
  if (r == 0) return;
  const int64_t in = c.proj_in(proj), out = c.proj_out(proj);
  s.r = r;
  s.scale = scale;
  s.a.assign(a, a + r * in);
  s.b.assign(b, b + out * r);
  for (auto* v : {&s.ga, &s.ma, &s.va}) fit(*v, r * in);
  for (auto* v : {&s.gb, &s.mb, &s.vb}) fit(*v, out * r);
  if (magnitude) {
    s.dora = true;
    s.m.assign(magnitude, magnitude + out);
    for (auto* v : {&s.gm, &s.mm, &s.vm, &s.norm}) fit(*v, out);
  }
}

void Engine::set_lora_core(int64_t layer, int proj, const float* r_core) {
  LoraSlot& s = slot(layer, proj);
  if (s.r == 0) throw Error("invalid_argument", module_path(layer, proj) + ": set the adapter before its core R");
  if (s.dora) throw Error("invalid_argument", module_path(layer, proj) + ": a DoRA module cannot have a trainable core R");
  s.core = true;
  s.rc.assign(r_core, r_core + s.r * s.r);
  for (auto* v : {&s.grc, &s.mrc, &s.vrc}) fit(*v, s.r * s.r);
  // A and B are frozen: no gradients or moments for them.
  for (auto* v : {&s.ga, &s.gb, &s.ma, &s.va, &s.mb, &s.vb}) std::vector<float>().swap(*v);
}

void Engine::set_dropout(float p, uint64_t seed) {
  if (!(p >= 0.0f && p < 1.0f)) throw Error("invalid_argument", "lora dropout must be in [0, 1)");
  dropout_p_ = p;
  dropout_seed_ = seed;
}

void Engine::set_training(bool on, int64_t step, int64_t micro) {
  training_ = on;
  train_step_ = step;
  train_micro_ = micro;
}

std::vector<float> Engine::dropout_mask(int64_t layer, int proj, int64_t step, int64_t micro, int64_t n) const {
  const int64_t in = model_->cfg.proj_in(proj);
  std::vector<float> mask(static_cast<size_t>(n * in));
  const uint64_t stream =
      stream_id("dropout:" + module_path(layer, proj) + ":" + std::to_string(step) + ":" + std::to_string(micro));
  philox_fill_uniform(dropout_seed_, stream, 0, n * in, mask.data());
  const float keep = 1.0f / (1.0f - dropout_p_);
  for (float& u : mask) u = u >= dropout_p_ ? keep : 0.0f;
  return mask;
}

void Engine::set_recompute(bool on) {
  if (on == recompute_) return;
  recompute_ = on;
  rows_ = seq_ = 0;  // reallocate on the next forward
  have_labels_ = false;
}

void Engine::set_base_weight(int64_t layer, int proj, const float* w) {
  const ModelConfig& c = model_->cfg;
  if (layer < 0 || layer >= c.num_layers || proj < 0 || proj >= kNumProj) {
    throw Error("invalid_argument", "base weight: layer or projection out of range");
  }
  std::vector<float>& o = base_override_[static_cast<size_t>(layer)][proj];
  if (w) o.assign(w, w + c.proj_out(proj) * c.proj_in(proj));
  else o.clear();
}

const float* Engine::base_weight(int64_t layer, int proj) const {
  const std::vector<float>& o = base_override_[static_cast<size_t>(layer)][proj];
  return o.empty() ? model_->layers[static_cast<size_t>(layer)].proj[proj].w.data() : o.data();
}

int64_t Engine::num_trainable() const {
  int64_t n = 0;
  for (const auto& layer : slots_)
    for (const LoraSlot& s : layer)
      n += s.core ? static_cast<int64_t>(s.rc.size()) : static_cast<int64_t>(s.a.size() + s.b.size() + s.m.size());
  return n;
}

void Engine::zero_grad() {
  for (auto& layer : slots_)
    for (LoraSlot& s : layer) {
      std::fill(s.ga.begin(), s.ga.end(), 0.0f);
      std::fill(s.gb.begin(), s.gb.end(), 0.0f);
      std::fill(s.gm.begin(), s.gm.end(), 0.0f);
      std::fill(s.grc.begin(), s.grc.end(), 0.0f);
    }
}

void Engine::ensure_buffers(int64_t rows, int64_t seq) {
  const ModelConfig& c = model_->cfg;
  const int64_t n = rows * seq, d = c.hidden_size, ff = c.intermediate_size;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim();
  if (rows != rows_ || seq != seq_) {
    rows_ = rows;
    seq_ = seq;
    acts_.assign(static_cast<size_t>(recompute_ ? 1 : c.num_layers), LayerActs{});
    layer_in_.assign(static_cast<size_t>(recompute_ ? c.num_layers : 0), std::vector<float>(static_cast<size_t>(n * d)));
    fit(recompute_out_, recompute_ ? n * d : 0);
    for (LayerActs& a : acts_) {
      for (auto* v : {&a.in, &a.x1, &a.mid, &a.x2}) fit(*v, n * d);
      for (auto* v : {&a.rstd1, &a.rstd2}) fit(*v, n);
      for (auto* v : {&a.q, &a.ao}) fit(*v, n * qd);
      for (auto* v : {&a.k, &a.v}) fit(*v, n * kvd);
      fit(a.att, rows * c.num_heads * seq * seq);
      for (auto* v : {&a.gate, &a.up, &a.act}) fit(*v, n * ff);
    }
    for (auto* v : {&fin_, &xf_, &dres_, &dx_, &tmp_}) fit(*v, n * d);
    fit(rstdf_, n);
    fit(row_loss_, n);
    fit(row_lse_, n);
    fit(logits_, n * c.vocab_size);
    for (auto* v : {&dq_, &dao_}) fit(*v, n * qd);
    for (auto* v : {&dk_, &dv_}) fit(*v, n * kvd);
    for (auto* v : {&dgate_, &dup_, &dact_}) fit(*v, n * ff);
    rope_tables(c, 0, seq, &cos_, &sin_);
  }
  // LoRA intermediates follow the adapters, which may change between calls.
  int64_t rmax = 0, dora_out = 0;
  // Sizes per (buffer set, projection); with recomputation the one scratch set holds the
  // largest any layer needs.
  std::vector<std::array<int64_t, kNumProj>> hn(acts_.size()), zn(acts_.size()), dn(acts_.size());
  for (size_t l = 0; l < slots_.size(); l++)
    for (int p = 0; p < kNumProj; p++) {
      const LoraSlot& s = slots_[l][p];
      const size_t k = recompute_ ? 0 : l;
      rmax = std::max(rmax, s.r);
      if (s.dora) dora_out = std::max(dora_out, c.proj_out(p));
      hn[k][p] = std::max(hn[k][p], n * s.r);
      zn[k][p] = std::max(zn[k][p], s.dora ? n * c.proj_out(p) : 0);
      dn[k][p] = std::max(dn[k][p], s.r > 0 && dropout_active() ? n * c.proj_in(p) : 0);
    }
  for (size_t k = 0; k < acts_.size(); k++)
    for (int p = 0; p < kNumProj; p++) {
      LayerActs& a = acts_[k];
      if (static_cast<int64_t>(a.h[p].size()) != hn[k][p]) fit(a.h[p], hn[k][p]);
      if (static_cast<int64_t>(a.z[p].size()) != zn[k][p]) fit(a.z[p], zn[k][p]);
      if (static_cast<int64_t>(a.xd[p].size()) != dn[k][p]) fit(a.xd[p], dn[k][p]);
      if (static_cast<int64_t>(a.mask[p].size()) != dn[k][p]) fit(a.mask[p], dn[k][p]);
    }
  if (static_cast<int64_t>(g_.size()) < n * rmax) fit(g_, n * rmax);
  if (static_cast<int64_t>(dyg_.size()) < n * dora_out) fit(dyg_, n * dora_out);
}

// y = x Wᵀ + b + s·(x Aᵀ) Bᵀ; h keeps x Aᵀ for the backward. DoRA: y = b + (m/n) ⊙ z with
// z = x Wᵀ + s·(x Aᵀ) Bᵀ (kept in `z` when given) and n = ‖W + s·BA‖ per row.
void Engine::linear_forward(int64_t layer, int p, const float* x, int64_t n, float* y, float* h, float* z, float* xd,
                            float* mask) const {
  const Linear& lin = model_->layers[static_cast<size_t>(layer)].proj[p];
  const LoraSlot& s = slot(layer, p);
  const int64_t out = lin.out, in = lin.in;
  const float* W = base_weight(layer, p);
  pgemm(false, true, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
  bool dropped = false;
  std::vector<float> wxd;  // DoRA with dropout: W·drop(x), which PEFT recomputes (METHODS §1.3)
  if (s.r > 0) {
    const float* xa = x;  // the adapter's input: drop(x) in training with dropout
    if (xd && dropout_active()) {
      std::vector<float> m = dropout_mask(layer, p, train_step_, train_micro_, n);
      std::memcpy(mask, m.data(), sizeof(float) * m.size());
      for (size_t i = 0; i < m.size(); i++) xd[i] = x[i] * m[i];
      xa = xd;
      dropped = true;
    }
    pgemm(false, true, n, s.r, in, 1.0f, xa, in, s.a.data(), in, 0.0f, h, s.r);
    if (s.core) {  // y += s·(h Rᵀ) Bᵀ; h = x Aᵀ stays for the backward
      std::vector<float> hr(static_cast<size_t>(n * s.r));
      pgemm(false, true, n, s.r, s.r, 1.0f, h, s.r, s.rc.data(), s.r, 0.0f, hr.data(), s.r);
      pgemm(false, true, n, out, s.r, s.scale, hr.data(), s.r, s.b.data(), s.r, 1.0f, y, out);
    } else if (s.dora && dropped) {
      // z̃ = W x̃ + s·B A x̃ (kept in z), y = W x + (m/n) ⊙ z̃ − W x̃.
      wxd.resize(static_cast<size_t>(n * out));
      pgemm(false, true, n, out, in, 1.0f, xa, in, W, in, 0.0f, wxd.data(), out);
      std::memcpy(z, wxd.data(), sizeof(float) * wxd.size());
      pgemm(false, true, n, out, s.r, s.scale, h, s.r, s.b.data(), s.r, 1.0f, z, out);
    } else {
      pgemm(false, true, n, out, s.r, s.scale, h, s.r, s.b.data(), s.r, 1.0f, y, out);
    }
  }
  if (s.dora) {
    // n = ‖W + s·BA‖ per output row, from BA formed once per call (as PEFT's get_weight_norm).
    std::vector<float> ba(static_cast<size_t>(out * in));
    pgemm(false, false, out, in, s.r, 1.0f, s.b.data(), s.r, s.a.data(), in, 0.0f, ba.data(), in);
    const float* w = W;
    float* norm = s.norm.data();
    parallel_for_work(out * in, out, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; o++) {
        double ss = 0;
        for (int64_t j = 0; j < in; j++) {
          const float v = w[o * in + j] + s.scale * ba[static_cast<size_t>(o * in + j)];
          ss += static_cast<double>(v) * v;
        }
        norm[o] = static_cast<float>(std::sqrt(ss));
      }
    });
    const float* m = s.m.data();
    if (dropped) {
      const float* zt = z;
      const float* wd = wxd.data();
      parallel_for_work(n * out, n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++)
          for (int64_t o = 0; o < out; o++) {
            const int64_t k = i * out + o;
            y[k] = y[k] + (m[o] / norm[o] - 1.0f) * wd[k] + (m[o] / norm[o]) * (zt[k] - wd[k]);
          }
      });
    } else {
      if (z) std::memcpy(z, y, sizeof(float) * static_cast<size_t>(n * out));
      parallel_for_work(n * out, n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++)
          for (int64_t o = 0; o < out; o++) y[i * out + o] *= m[o] / norm[o];
      });
    }
  }
  if (!lin.b.empty()) {
    const float* b = lin.b.data();
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < out; j++) y[i * out + j] += b[j];
  }
}

// METHODS §1.1: dx = dy W + s (dy B) A; dB += s dyᵀ h; dA += s (dy B)ᵀ x. DoRA first
// takes dm += Σ_tokens dy ⊙ z / n and continues with dy ⊙ (m/n) (n is detached).
void Engine::linear_backward(int64_t layer, int p, const float* x, const float* h, const float* dy, int64_t n, float* dx,
                             bool accumulate) {
  const Linear& lin = model_->layers[static_cast<size_t>(layer)].proj[p];
  LoraSlot& s = slot(layer, p);
  std::vector<float>& wg = wgrad_[static_cast<size_t>(layer)][p];
  if (!wg.empty()) pgemm(true, false, lin.out, lin.in, n, 1.0f, dy, lin.out, x, lin.in, 1.0f, wg.data(), lin.in);
  if (s.dora && !act(layer).xd[p].empty()) {
    dora_dropout_backward(layer, p, x, h, dy, n, dx, accumulate);
    return;
  }
  if (s.dora) {
    const int64_t out = lin.out;
    const float* z = act(layer).z[p].data();
    const float *m = s.m.data(), *norm = s.norm.data();
    float* gm = s.gm.data();
    float* dyg = dyg_.data();
    parallel_for_work(n * out, out, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; o++) {
        double acc = 0;
        for (int64_t i = 0; i < n; i++) acc += static_cast<double>(dy[i * out + o]) * z[i * out + o];
        gm[o] += static_cast<float>(acc / norm[o]);
      }
    });
    parallel_for_work(n * out, n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++)
        for (int64_t o = 0; o < out; o++) dyg[i * out + o] = dy[i * out + o] * (m[o] / norm[o]);
    });
    dy = dyg;
  }
  if (dx) {
    pgemm(false, false, n, lin.in, lin.out, 1.0f, dy, lin.out, base_weight(layer, p), lin.in, accumulate ? 1.0f : 0.0f, dx,
          lin.in);
  }
  if (s.r == 0) return;
  const LayerActs& a = act(layer);
  const bool dropped = !a.xd[p].empty();  // the forward used drop(x) = x ⊙ D
  const float* xa = dropped ? a.xd[p].data() : x;
  float* g = g_.data();
  pgemm(false, false, n, s.r, lin.out, 1.0f, dy, lin.out, s.b.data(), s.r, 0.0f, g, s.r);
  if (s.core) {
    // dR += s (dy B)ᵀ h; dx += s ((dy B) R) A (masked under dropout).
    pgemm(true, false, s.r, s.r, n, s.scale, g, s.r, h, s.r, 1.0f, s.grc.data(), s.r);
    if (!dx) return;
    std::vector<float> gr(static_cast<size_t>(n * s.r));
    pgemm(false, false, n, s.r, s.r, 1.0f, g, s.r, s.rc.data(), s.r, 0.0f, gr.data(), s.r);
    if (!dropped) {
      pgemm(false, false, n, lin.in, s.r, s.scale, gr.data(), s.r, s.a.data(), lin.in, 1.0f, dx, lin.in);
    } else {
      std::vector<float> t(static_cast<size_t>(n * lin.in));
      pgemm(false, false, n, lin.in, s.r, s.scale, gr.data(), s.r, s.a.data(), lin.in, 0.0f, t.data(), lin.in);
      const float* mask = a.mask[p].data();
      for (size_t i = 0; i < t.size(); i++) dx[i] += t[i] * mask[i];
    }
    return;
  }
  if (dx && !dropped) pgemm(false, false, n, lin.in, s.r, s.scale, g, s.r, s.a.data(), lin.in, 1.0f, dx, lin.in);
  if (dx && dropped) {  // dx += D ⊙ (s (dy B) A)
    std::vector<float> t(static_cast<size_t>(n * lin.in));
    pgemm(false, false, n, lin.in, s.r, s.scale, g, s.r, s.a.data(), lin.in, 0.0f, t.data(), lin.in);
    const float* mask = a.mask[p].data();
    for (size_t i = 0; i < t.size(); i++) dx[i] += t[i] * mask[i];
  }
  pgemm(true, false, lin.out, s.r, n, s.scale, dy, lin.out, h, s.r, 1.0f, s.gb.data(), s.r);
  pgemm(true, false, s.r, lin.in, n, s.scale, g, s.r, xa, lin.in, 1.0f, s.ga.data(), lin.in);
}

// DoRA with dropout (PEFT's path that recomputes W x̃): y = W x + (g − 1) ⊙ W x̃ + g ⊙ s·BA x̃,
// g = m/n. dm += Σ dy ⊙ z̃ / n; dx = dy W + D ⊙ [(dy ⊙ (g − 1)) W + s ((dy ⊙ g) B) A];
// dB += s (dy ⊙ g)ᵀ h; dA += s ((dy ⊙ g) B)ᵀ x̃.
void Engine::dora_dropout_backward(int64_t layer, int p, const float* x, const float* h, const float* dy, int64_t n,
                                   float* dx, bool accumulate) {
  const Linear& lin = model_->layers[static_cast<size_t>(layer)].proj[p];
  LoraSlot& s = slot(layer, p);
  const LayerActs& a = act(layer);
  const int64_t out = lin.out, in = lin.in;
  const float *z = a.z[p].data(), *m = s.m.data(), *norm = s.norm.data();
  float* gm = s.gm.data();
  parallel_for_work(n * out, out, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; o++) {
      double acc = 0;
      for (int64_t i = 0; i < n; i++) acc += static_cast<double>(dy[i * out + o]) * z[i * out + o];
      gm[o] += static_cast<float>(acc / norm[o]);
    }
  });
  std::vector<float> dyg(static_cast<size_t>(n * out)), dyg1(dyg.size());
  for (int64_t i = 0; i < n; i++)
    for (int64_t o = 0; o < out; o++) {
      const float g = m[o] / norm[o];
      dyg[static_cast<size_t>(i * out + o)] = dy[i * out + o] * g;
      dyg1[static_cast<size_t>(i * out + o)] = dy[i * out + o] * (g - 1.0f);
    }
  const float* W = base_weight(layer, p);
  float* g = g_.data();
  pgemm(false, false, n, s.r, out, 1.0f, dyg.data(), out, s.b.data(), s.r, 0.0f, g, s.r);
  if (dx) {
    (void)x;
    pgemm(false, false, n, in, out, 1.0f, dy, out, W, in, accumulate ? 1.0f : 0.0f, dx, in);
    std::vector<float> t(static_cast<size_t>(n * in));
    pgemm(false, false, n, in, out, 1.0f, dyg1.data(), out, W, in, 0.0f, t.data(), in);
    pgemm(false, false, n, in, s.r, s.scale, g, s.r, s.a.data(), in, 1.0f, t.data(), in);
    const float* mask = a.mask[p].data();
    for (size_t i = 0; i < t.size(); i++) dx[i] += t[i] * mask[i];
  }
  pgemm(true, false, out, s.r, n, s.scale, dyg.data(), out, h, s.r, 1.0f, s.gb.data(), s.r);
  pgemm(true, false, s.r, in, n, s.scale, g, s.r, a.xd[p].data(), in, 1.0f, s.ga.data(), in);
}

// Causal (optionally sliding-window) softmax attention per (row, head), GQA: head h reads
// kv head h / (heads / kv_heads). att keeps the probabilities (zeros where masked).
void Engine::attention_forward(int64_t layer) {
  const ModelConfig& c = model_->cfg;
  LayerActs& a = act(layer);
  const int64_t T = seq_, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim(), nh = c.num_heads;
  const int64_t group = nh / c.num_kv_heads, window = c.window[static_cast<size_t>(layer)];
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  // One task per (row, head); each writes its own probabilities and output columns.
  parallel_for(rows_ * nh, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / nh, h = t % nh;
      const float* q = a.q.data() + b * T * qd + h * hd;
      const float* k = a.k.data() + b * T * kvd + (h / group) * hd;
      const float* v = a.v.data() + b * T * kvd + (h / group) * hd;
      float* P = a.att.data() + (b * nh + h) * T * T;
      gemm(false, true, T, T, hd, scale, q, qd, k, kvd, 0.0f, P, T);
      causal_softmax(P, T, window, doc_start_.data() + b * T);
      gemm(false, false, T, hd, T, 1.0f, P, T, v, kvd, 0.0f, a.ao.data() + b * T * qd + h * hd, qd);
    }
  });
}

// dP = dO Vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ = s dS K; dK += s dSᵀ Q; dV += Pᵀ dO.
void Engine::attention_backward(int64_t layer, const float* dao) {
  const ModelConfig& c = model_->cfg;
  LayerActs& a = act(layer);
  const int64_t T = seq_, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim(), nh = c.num_heads;
  const int64_t group = nh / c.num_kv_heads;
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  std::fill(dk_.begin(), dk_.end(), 0.0f);
  std::fill(dv_.begin(), dv_.end(), 0.0f);
  const int64_t nkv = c.num_kv_heads;
  // One task per (row, kv head): the heads sharing a kv head accumulate its dK/dV in a
  // fixed order on one thread, so no two threads write the same entries.
  parallel_for(rows_ * nkv, [&](int64_t t0, int64_t t1) {
    std::vector<float> scratch(static_cast<size_t>(T * T));
    float* dS = scratch.data();
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / nkv, g = t % nkv;
      const int64_t ko = b * T * kvd + g * hd;
      for (int64_t h = g * group; h < (g + 1) * group; h++) {
        const int64_t qo = b * T * qd + h * hd;
        const float* P = a.att.data() + (b * nh + h) * T * T;
        gemm(false, true, T, T, hd, 1.0f, dao + qo, qd, a.v.data() + ko, kvd, 0.0f, dS, T);
        for (int64_t i = 0; i < T; i++) {
          const float* p = P + i * T;
          float* gr = dS + i * T;
          double dot = 0;
          for (int64_t j = 0; j <= i; j++) dot += static_cast<double>(p[j]) * gr[j];
          const auto df = static_cast<float>(dot);
          for (int64_t j = 0; j <= i; j++) gr[j] = p[j] * (gr[j] - df);
          for (int64_t j = i + 1; j < T; j++) gr[j] = 0.0f;
        }
        gemm(false, false, T, hd, T, scale, dS, T, a.k.data() + ko, kvd, 0.0f, dq_.data() + qo, qd);
        gemm(true, false, T, hd, T, scale, dS, T, a.q.data() + qo, qd, 1.0f, dk_.data() + ko, kvd);
        gemm(true, false, T, hd, T, 1.0f, P, T, dao + qo, qd, 1.0f, dv_.data() + ko, kvd);
      }
    }
  });
}

// One decoder layer: out = mid + down(silu(gate(x2)) ⊙ up(x2)), mid = in + o(attn(x1)).
void Engine::layer_forward(int64_t l, float* out) {
  const ModelConfig& c = model_->cfg;
  const int64_t n = rows_ * seq_, d = c.hidden_size;
  const std::vector<int64_t>& pos = pos_;
  LayerActs& a = act(l);
  if (recompute_) std::memcpy(a.in.data(), layer_in_[static_cast<size_t>(l)].data(), sizeof(float) * static_cast<size_t>(n * d));
  const Layer& w = model_->layers[static_cast<size_t>(l)];
  rmsnorm_forward(a.in.data(), w.input_norm.data(), n, d, c.rms_norm_eps, a.x1.data(), a.rstd1.data());
  linear_forward(l, kQ, a.x1.data(), n, a.q.data(), a.h[kQ].data(), a.z[kQ].data(),
                 a.xd[kQ].data(), a.mask[kQ].data());
  linear_forward(l, kK, a.x1.data(), n, a.k.data(), a.h[kK].data(), a.z[kK].data(),
                 a.xd[kK].data(), a.mask[kK].data());
  linear_forward(l, kV, a.x1.data(), n, a.v.data(), a.h[kV].data(), a.z[kV].data(),
                 a.xd[kV].data(), a.mask[kV].data());
  rope_apply(a.q.data(), n, c.q_dim(), c.num_heads, c.head_dim, pos.data(), cos_.data(), sin_.data(), false);
  rope_apply(a.k.data(), n, c.kv_dim(), c.num_kv_heads, c.head_dim, pos.data(), cos_.data(), sin_.data(), false);
  attention_forward(l);
  linear_forward(l, kO, a.ao.data(), n, tmp_.data(), a.h[kO].data(), a.z[kO].data(),
                 a.xd[kO].data(), a.mask[kO].data());
  for (int64_t i = 0; i < n * d; i++) a.mid[static_cast<size_t>(i)] = a.in[static_cast<size_t>(i)] + tmp_[static_cast<size_t>(i)];
  rmsnorm_forward(a.mid.data(), w.post_norm.data(), n, d, c.rms_norm_eps, a.x2.data(), a.rstd2.data());
  linear_forward(l, kGate, a.x2.data(), n, a.gate.data(), a.h[kGate].data(), a.z[kGate].data(),
                 a.xd[kGate].data(), a.mask[kGate].data());
  linear_forward(l, kUp, a.x2.data(), n, a.up.data(), a.h[kUp].data(), a.z[kUp].data(),
                 a.xd[kUp].data(), a.mask[kUp].data());
  const int64_t nf = n * c.intermediate_size;
  const float* gate = a.gate.data();
  const float* up = a.up.data();
  float* silu_up = a.act.data();
  parallel_for_work(nf, nf, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) silu_up[i] = gate[i] * sigmoid(gate[i]) * up[i];
  });
  linear_forward(l, kDown, a.act.data(), n, tmp_.data(), a.h[kDown].data(), a.z[kDown].data(),
                 a.xd[kDown].data(), a.mask[kDown].data());
  for (int64_t i = 0; i < n * d; i++) out[i] = a.mid[static_cast<size_t>(i)] + tmp_[static_cast<size_t>(i)];
}

LossSum Engine::forward(const Batch& batch, float* logits_out) {
  const ModelConfig& c = model_->cfg;
  if (batch.rows < 1 || batch.seq < 1) throw Error("invalid_argument", "a batch needs at least one row of one token");
  if (batch.seq > c.max_position_embeddings) {
    throw Error("invalid_argument", "sequence length " + std::to_string(batch.seq) + " exceeds max_position_embeddings (" +
                                        std::to_string(c.max_position_embeddings) + ")");
  }
  const int64_t n = batch.rows * batch.seq, d = c.hidden_size, V = c.vocab_size, T = batch.seq;
  if (batch.segments) {
    for (int64_t b = 0; b < batch.rows; b++)
      for (int64_t t = 1; t < T; t++)
        if (batch.segments[b * T + t] < batch.segments[b * T + t - 1]) {
          throw Error("invalid_argument", "segments must be non-decreasing within a row (row " + std::to_string(b) +
                                              ", position " + std::to_string(t) + ")");
        }
  }
  for (int64_t i = 0; i < n; i++) {
    if (batch.tokens[i] < 0 || batch.tokens[i] >= V) {
      throw Error("invalid_argument", "token id " + std::to_string(batch.tokens[i]) + " at position " + std::to_string(i) +
                                          " is outside the vocabulary [0, " + std::to_string(V) + ")");
    }
    if (batch.labels && batch.labels[i] != kIgnore && (batch.labels[i] < 0 || batch.labels[i] >= V)) {
      throw Error("invalid_argument", "label " + std::to_string(batch.labels[i]) + " at position " + std::to_string(i) +
                                          " is neither -100 nor a token id below " + std::to_string(V));
    }
  }
  ensure_buffers(batch.rows, batch.seq);
  BlasSingleThread blas_guard;
  pos_.assign(static_cast<size_t>(n), 0);
  doc_start_.assign(static_cast<size_t>(n), 0);
  for (int64_t b = 0; b < batch.rows; b++)
    for (int64_t t = 0; t < T; t++) {
      const int64_t i = b * T + t;
      const bool same = t > 0 && batch.segments && batch.segments[i] == batch.segments[i - 1];
      const bool first = t == 0 || (batch.segments && !same);
      doc_start_[static_cast<size_t>(i)] = first ? t : doc_start_[static_cast<size_t>(i - 1)];
      pos_[static_cast<size_t>(i)] = t - doc_start_[static_cast<size_t>(i)];
    }

  // Embedding lookup.
  float* h0 = recompute_ ? layer_in_[0].data() : acts_[0].in.data();
  for (int64_t i = 0; i < n; i++) std::memcpy(h0 + i * d, model_->embed.data() + batch.tokens[i] * d, sizeof(float) * d);

  for (int64_t l = 0; l < c.num_layers; l++) {
    float* out = l + 1 == c.num_layers ? fin_.data()
                 : recompute_         ? layer_in_[static_cast<size_t>(l + 1)].data()
                                      : acts_[static_cast<size_t>(l + 1)].in.data();
    layer_forward(l, out);
  }
  rmsnorm_forward(fin_.data(), model_->norm.data(), n, d, c.rms_norm_eps, xf_.data(), rstdf_.data());
  pgemm(false, true, n, V, d, 1.0f, xf_.data(), d, model_->head(), d, 0.0f, logits_.data(), V);
  if (logits_out) std::memcpy(logits_out, logits_.data(), sizeof(float) * static_cast<size_t>(n * V));

  have_labels_ = batch.labels != nullptr;
  LossSum loss;
  if (!have_labels_) return loss;
  labels_.assign(static_cast<size_t>(n), kIgnore);
  for (int64_t b = 0; b < batch.rows; b++)
    for (int64_t t = 0; t + 1 < T; t++)
      if (predicts(batch, b, t)) labels_[static_cast<size_t>(b * T + t)] = batch.labels[b * T + t + 1];
  const int32_t* y = labels_.data();
  float* rl = row_loss_.data();
  const float* z = logits_.data();
  float* lse = row_lse_.data();
  parallel_for_work(n * V, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      rl[i] = 0.0f;
      if (y[i] == kIgnore) continue;
      lse[i] = log_sum_exp(z + i * V, V);
      rl[i] = lse[i] - z[i * V + y[i]];
    }
  });
  for (int64_t i = 0; i < n; i++) {
    if (y[i] == kIgnore) continue;
    loss.sum += rl[i];
    loss.count++;
  }
  return loss;
}

void Engine::backward(float loss_scale) {
  if (!have_labels_) throw Error("invalid_argument", "backward needs a forward pass with labels first");
  const ModelConfig& c = model_->cfg;
  const int64_t n = rows_ * seq_, d = c.hidden_size, V = c.vocab_size;
  BlasSingleThread blas_guard;
  const std::vector<int64_t>& pos = pos_;

  // dlogits = scale · (softmax − onehot) on labelled rows, in place over the logits.
  float* z = logits_.data();
  const int32_t* y = labels_.data();
  const float* lse = row_lse_.data();
  parallel_for_work(n * V, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      float* zi = z + i * V;
      if (y[i] == kIgnore) {
        std::fill(zi, zi + V, 0.0f);
        continue;
      }
      const float m = lse[i];
      for (int64_t j = 0; j < V; j++) zi[j] = std::exp(zi[j] - m) * loss_scale;
      zi[y[i]] -= loss_scale;
    }
  });
  have_labels_ = false;  // the logits are gone
  pgemm(false, false, n, d, V, 1.0f, z, V, model_->head(), d, 0.0f, dx_.data(), d);
  rmsnorm_backward(fin_.data(), model_->norm.data(), rstdf_.data(), dx_.data(), n, d, dres_.data(), false);

  for (int64_t l = c.num_layers - 1; l >= 0; l--) {
    const Layer& w = model_->layers[static_cast<size_t>(l)];
    if (recompute_) layer_forward(l, recompute_out_.data());  // the activations this layer's backward reads
    LayerActs& a = act(l);
    const int64_t nf = n * c.intermediate_size;
    // MLP: out = mid + down(silu(gate) ⊙ up).
    linear_backward(l, kDown, a.act.data(), a.h[kDown].data(), dres_.data(), n, dact_.data(), false);
    const float *gate = a.gate.data(), *up = a.up.data(), *dact = dact_.data();
    float *dup = dup_.data(), *dgate = dgate_.data();
    parallel_for_work(nf, nf, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) {
        const float g = gate[i], sg = sigmoid(g), da = dact[i];
        dup[i] = da * g * sg;
        dgate[i] = da * up[i] * sg * (1.0f + g * (1.0f - sg));
      }
    });
    linear_backward(l, kGate, a.x2.data(), a.h[kGate].data(), dgate_.data(), n, dx_.data(), false);
    linear_backward(l, kUp, a.x2.data(), a.h[kUp].data(), dup_.data(), n, dx_.data(), true);
    rmsnorm_backward(a.mid.data(), w.post_norm.data(), a.rstd2.data(), dx_.data(), n, d, dres_.data(), true);
    // Attention: mid = in + o(attn(rope(q), rope(k), v)).
    linear_backward(l, kO, a.ao.data(), a.h[kO].data(), dres_.data(), n, dao_.data(), false);
    attention_backward(l, dao_.data());
    rope_apply(dq_.data(), n, c.q_dim(), c.num_heads, c.head_dim, pos.data(), cos_.data(), sin_.data(), true);
    rope_apply(dk_.data(), n, c.kv_dim(), c.num_kv_heads, c.head_dim, pos.data(), cos_.data(), sin_.data(), true);
    // The embedding is frozen: below layer 0 only the adapters' gradients matter.
    const bool need_dx = l > 0;
    float* dx = need_dx ? dx_.data() : nullptr;
    linear_backward(l, kQ, a.x1.data(), a.h[kQ].data(), dq_.data(), n, dx, false);
    linear_backward(l, kK, a.x1.data(), a.h[kK].data(), dk_.data(), n, dx, true);
    linear_backward(l, kV, a.x1.data(), a.h[kV].data(), dv_.data(), n, dx, true);
    if (need_dx) rmsnorm_backward(a.in.data(), w.input_norm.data(), a.rstd1.data(), dx_.data(), n, d, dres_.data(), true);
  }
}

}  // namespace lowrank::train
