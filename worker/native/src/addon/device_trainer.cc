// The CPU engine's session trained by the CUDA device engine (see device_trainer.h).
#include "device_trainer.h"

#include "../train/generate_loop.h"

#include <cmath>
#include <cstring>

#include "backend_select.h"
#include "lowrank/device_engine.h"
#include "lowrank/error.h"
#include "lowrank/rng.h"
#include "../train/rope.h"

namespace lowrank::addon {

namespace {

constexpr int32_t kIgnore = -100;

// The device engine's entry points in the dlopen()ed library.
struct Fns {
  int (*abi)();
  lrk_status (*create)(const lrk_dev_config*, lrk_dev_engine**);
  void (*destroy)(lrk_dev_engine*);
  lrk_status (*set_tensor)(lrk_dev_engine*, int, int64_t, int, const void*, lrk_dtype);
  lrk_status (*set_rope)(lrk_dev_engine*, int64_t, const float*, const float*);
  lrk_status (*set_adapter)(lrk_dev_engine*, const int64_t*, const float*, const int*, const int*);
  lrk_status (*set_factors)(lrk_dev_engine*, int64_t, int, const float*, const float*);
  lrk_status (*set_recompute)(lrk_dev_engine*, int);
  lrk_status (*set_matmul)(lrk_dev_engine*, int, int*);
  int64_t (*num_params)(const lrk_dev_engine*);
  lrk_status (*read)(lrk_dev_engine*, int, float*, int64_t);
  lrk_status (*write)(lrk_dev_engine*, int, const float*, int64_t);
  lrk_status (*zero_grad)(lrk_dev_engine*);
  lrk_status (*forward)(lrk_dev_engine*, const lrk_dev_batch*, double*, int64_t*);
  lrk_status (*forward_backward)(lrk_dev_engine*, const lrk_dev_batch*, float, float, uint64_t, const uint64_t*, double*,
                                 int64_t*);
  lrk_status (*optimizer_step)(lrk_dev_engine*, double, double, double, double, double, double, int64_t, double*);
  lrk_status (*generate_begin)(lrk_dev_engine*, int64_t, int64_t);
  lrk_status (*generate_step)(lrk_dev_engine*, int64_t, int64_t, const int32_t*, const int64_t*, const int64_t*, float*);
  void (*generate_end)(lrk_dev_engine*);
};

template <typename T>
void bind(T* fn, const char* name, std::string* missing) {
  *fn = reinterpret_cast<T>(cuda_symbol(name));
  if (!*fn && missing->empty()) *missing = name;
}

// Loaded once; throws when the CUDA backend or its device engine is not there.
const Fns& fns() {
  static Fns f{};
  static std::string why;
  static bool loaded = false;
  if (!loaded) {
    loaded = true;
    const BackendInfo& info = backend_info();
    if (info.backend != "cuda") {
      why = "the CUDA backend is not in use (" + (info.reason.empty() ? "LOWRANK_BACKEND=cpu" : info.reason) + ")";
    } else {
      std::string missing;
      bind(&f.abi, "lrk_dev_abi", &missing);
      bind(&f.create, "lrk_dev_create", &missing);
      bind(&f.destroy, "lrk_dev_destroy", &missing);
      bind(&f.set_tensor, "lrk_dev_set_tensor", &missing);
      bind(&f.set_rope, "lrk_dev_set_rope", &missing);
      bind(&f.set_adapter, "lrk_dev_set_adapter", &missing);
      bind(&f.set_factors, "lrk_dev_set_factors", &missing);
      bind(&f.set_recompute, "lrk_dev_set_recompute", &missing);
      bind(&f.set_matmul, "lrk_dev_set_matmul", &missing);
      bind(&f.num_params, "lrk_dev_num_params", &missing);
      bind(&f.read, "lrk_dev_read", &missing);
      bind(&f.write, "lrk_dev_write", &missing);
      bind(&f.zero_grad, "lrk_dev_zero_grad", &missing);
      bind(&f.forward, "lrk_dev_forward", &missing);
      bind(&f.forward_backward, "lrk_dev_forward_backward", &missing);
      bind(&f.optimizer_step, "lrk_dev_optimizer_step", &missing);
      bind(&f.generate_begin, "lrk_dev_generate_begin", &missing);
      bind(&f.generate_step, "lrk_dev_generate_step", &missing);
      bind(&f.generate_end, "lrk_dev_generate_end", &missing);
      if (!missing.empty()) {
        why = info.library + " lacks the device engine (" + missing + "): rebuild it with scripts/build-cuda";
      } else if (f.abi() != LRK_DEVICE_ENGINE_ABI) {
        why = info.library + " has device engine ABI " + std::to_string(f.abi()) + ", the addon " +
              std::to_string(LRK_DEVICE_ENGINE_ABI) + ": rebuild both (scripts/build-native)";
      }
    }
  }
  if (!why.empty()) throw Error("backend_unavailable", why);
  return f;
}

const char* last_error() {
  auto msg = reinterpret_cast<const char* (*)()>(cuda_symbol("lrk_cuda_last_error"));
  return msg ? msg() : "unknown CUDA error";
}

// fp32 values that are all exact bf16 (the low 16 bits zero: a bf16 checkpoint) go up as
// bf16, half the device memory; the GEMM widens them back, so the math is unchanged.
bool exact_bf16(const float* x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    if (u & 0xFFFFu) return false;
  }
  return true;
}

// What Engine::forward derives on the host: document starts, positions, shifted targets
// (with its checks and messages).
struct HostBatch {
  std::vector<int64_t> pos, doc;
  std::vector<int32_t> targets;
};

HostBatch host_batch(const train::ModelConfig& c, const train::Batch& b) {
  if (b.rows < 1 || b.seq < 1) throw Error("invalid_argument", "a batch needs at least one row of one token");
  if (b.seq > c.max_position_embeddings)
    throw Error("invalid_argument", "sequence length " + std::to_string(b.seq) + " exceeds max_position_embeddings (" +
                                        std::to_string(c.max_position_embeddings) + ")");
  const int64_t T = b.seq, n = b.rows * T;
  HostBatch h;
  h.pos.resize(static_cast<size_t>(n));
  h.doc.resize(static_cast<size_t>(n));
  h.targets.assign(static_cast<size_t>(n), kIgnore);
  for (int64_t r = 0; r < b.rows; r++)
    for (int64_t t = 0; t < T; t++) {
      const int64_t i = r * T + t;
      if (b.segments && t > 0 && b.segments[i] < b.segments[i - 1])
        throw Error("invalid_argument", "segments must be non-decreasing within a row (row " + std::to_string(r) +
                                            ", position " + std::to_string(t) + ")");
      const bool same = t > 0 && b.segments && b.segments[i] == b.segments[i - 1];
      const bool first = t == 0 || (b.segments && !same);
      h.doc[static_cast<size_t>(i)] = first ? t : h.doc[static_cast<size_t>(i - 1)];
      h.pos[static_cast<size_t>(i)] = t - h.doc[static_cast<size_t>(i)];
      if (b.tokens[i] < 0 || b.tokens[i] >= c.vocab_size)
        throw Error("invalid_argument", "token id " + std::to_string(b.tokens[i]) + " at position " + std::to_string(i) +
                                            " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
      if (!b.labels) continue;
      if (b.labels[i] != kIgnore && (b.labels[i] < 0 || b.labels[i] >= c.vocab_size))
        throw Error("invalid_argument", "label " + std::to_string(b.labels[i]) + " at position " + std::to_string(i) +
                                            " is neither -100 nor a token id below " + std::to_string(c.vocab_size));
      if (train::predicts(b, r, t)) h.targets[static_cast<size_t>(i)] = b.labels[i + 1];
    }
  return h;
}

}  // namespace

std::string DeviceTrainer::unsupported(const train::Engine& engine) {
  const train::ModelConfig& c = engine.model().cfg;
  if (engine.num_trainable() == 0) return "no adapter is set";
  for (int64_t l = 0; l < c.num_layers; l++)
    for (int p = 0; p < train::kNumProj; p++) {
      const train::LoraSlot& s = engine.slot(l, p);
      const std::string where = " (" + train::module_path(l, p) + ")";
      if (!engine.weight_grad(l, p).empty())
        return "frozen-weight gradient capture (LoRA-GA / LoRA-SB inits) runs on the CPU engine" + where;
    }
  return "";
}

void DeviceTrainer::check(int status) const {
  if (status != LRK_OK) throw Error(status == LRK_INVALID_ARGUMENT ? "invalid_argument" : "device_error",
                                    std::string("CUDA engine: ") + last_error());
}

std::unique_ptr<DeviceTrainer> DeviceTrainer::create(const train::Engine& engine) {
  const Fns& f = fns();
  const train::Model& m = engine.model();
  const train::ModelConfig& c = m.cfg;
  lrk_dev_config dc{};
  dc.vocab = c.vocab_size;
  dc.hidden = c.hidden_size;
  dc.intermediate = c.intermediate_size;
  dc.layers = c.num_layers;
  dc.heads = c.num_heads;
  dc.kv_heads = c.num_kv_heads;
  dc.head_dim = c.head_dim;
  dc.rms_norm_eps = c.rms_norm_eps;
  dc.tie_word_embeddings = c.tie_word_embeddings ? 1 : 0;
  for (int p = 0; p < train::kNumProj; p++) dc.proj_bias[p] = c.proj_bias[p] ? 1 : 0;
  dc.window = c.window.data();
  std::unique_ptr<DeviceTrainer> t(new DeviceTrainer());
  t->check(f.create(&dc, &t->dev_));
  auto put = [&](int which, int64_t layer, int proj, const std::vector<float>& w, bool matrix) {
    if (matrix && exact_bf16(w.data(), w.size())) {
      std::vector<uint16_t> h(w.size());
      for (size_t i = 0; i < w.size(); i++) {
        uint32_t u;
        std::memcpy(&u, &w[i], 4);
        h[i] = static_cast<uint16_t>(u >> 16);
      }
      t->check(f.set_tensor(t->dev_, which, layer, proj, h.data(), LRK_BF16));
    } else {
      t->check(f.set_tensor(t->dev_, which, layer, proj, w.data(), LRK_F32));
    }
  };
  put(LRK_DEV_EMBED, 0, 0, m.embed, true);
  put(LRK_DEV_NORM, 0, 0, m.norm, false);
  if (!c.tie_word_embeddings) put(LRK_DEV_LM_HEAD, 0, 0, m.lm_head, true);
  for (int64_t l = 0; l < c.num_layers; l++) {
    const train::Layer& L = m.layers[static_cast<size_t>(l)];
    put(LRK_DEV_INPUT_NORM, l, 0, L.input_norm, false);
    put(LRK_DEV_POST_NORM, l, 0, L.post_norm, false);
    for (int p = 0; p < train::kNumProj; p++)
      if (c.proj_bias[p]) put(LRK_DEV_PROJ_B, l, p, L.proj[p].b, false);
  }
  t->upload_weights(engine);
  t->upload_adapter(engine);
  return t;
}

DeviceTrainer::~DeviceTrainer() {
  if (dev_) fns().destroy(dev_);
}

void DeviceTrainer::upload_weights(const train::Engine& engine) {
  const Fns& f = fns();
  const train::ModelConfig& c = engine.model().cfg;
  for (int64_t l = 0; l < c.num_layers; l++)
    for (int p = 0; p < train::kNumProj; p++) {
      const float* w = engine.base_weight(l, p);
      const size_t n = static_cast<size_t>(c.proj_out(p) * c.proj_in(p));
      if (exact_bf16(w, n)) {
        std::vector<uint16_t> h(n);
        for (size_t i = 0; i < n; i++) {
          uint32_t u;
          std::memcpy(&u, &w[i], 4);
          h[i] = static_cast<uint16_t>(u >> 16);
        }
        check(f.set_tensor(dev_, LRK_DEV_PROJ_W, l, p, h.data(), LRK_BF16));
      } else {
        check(f.set_tensor(dev_, LRK_DEV_PROJ_W, l, p, w, LRK_F32));
      }
    }
}

void DeviceTrainer::upload_adapter(const train::Engine& engine) {
  const Fns& f = fns();
  const train::ModelConfig& c = engine.model().cfg;
  std::vector<int64_t> ranks;
  std::vector<float> scales;
  std::vector<int> dora, core;
  for (int64_t l = 0; l < c.num_layers; l++)
    for (int p = 0; p < train::kNumProj; p++) {
      ranks.push_back(engine.slot(l, p).r);
      scales.push_back(engine.slot(l, p).scale);
      dora.push_back(engine.slot(l, p).dora ? 1 : 0);
      core.push_back(engine.slot(l, p).core ? 1 : 0);
    }
  check(f.set_adapter(dev_, ranks.data(), scales.data(), dora.data(), core.data()));
  num_params_ = f.num_params(dev_);
  std::vector<float> params, m1, m2;
  params.reserve(static_cast<size_t>(num_params_));
  // A tensor, its AdamW moments (zeros before the first step), in the device's packed order.
  auto add = [&](const std::vector<float>& v, const std::vector<float>& m, const std::vector<float>& sq) {
    params.insert(params.end(), v.begin(), v.end());
    for (auto [to, from] : {std::pair{&m1, &m}, std::pair{&m2, &sq}}) {
      if (from->size() == v.size()) to->insert(to->end(), from->begin(), from->end());
      else to->insert(to->end(), v.size(), 0.0f);
    }
  };
  for (int64_t l = 0; l < c.num_layers; l++)
    for (int p = 0; p < train::kNumProj; p++) {
      const train::LoraSlot& s = engine.slot(l, p);
      if (s.r == 0) continue;
      if (s.core) {  // LoRA-SB: A and B frozen on the device, R packed
        check(f.set_factors(dev_, l, p, s.a.data(), s.b.data()));
        add(s.rc, s.mrc, s.vrc);
        continue;
      }
      add(s.a, s.ma, s.va);
      add(s.b, s.mb, s.vb);
      if (s.dora) add(s.m, s.mm, s.vm);  // the magnitude follows B
    }
  check(f.write(dev_, LRK_DEV_PARAMS, params.data(), num_params_));
  check(f.write(dev_, LRK_DEV_EXP_AVG, m1.data(), num_params_));
  check(f.write(dev_, LRK_DEV_EXP_AVG_SQ, m2.data(), num_params_));
}

void DeviceTrainer::download(train::Engine& engine, bool grads) {
  const Fns& f = fns();
  const train::ModelConfig& c = engine.model().cfg;
  std::vector<float> buf(static_cast<size_t>(num_params_));
  // Each state buffer and the host vectors of A, B, the magnitude and the core it fills.
  struct Part {
    int which;
    std::vector<float> train::LoraSlot::*a, train::LoraSlot::*b, train::LoraSlot::*m, train::LoraSlot::*r;
  };
  using S = train::LoraSlot;
  std::vector<Part> parts = {{LRK_DEV_PARAMS, &S::a, &S::b, &S::m, &S::rc},
                             {LRK_DEV_EXP_AVG, &S::ma, &S::mb, &S::mm, &S::mrc},
                             {LRK_DEV_EXP_AVG_SQ, &S::va, &S::vb, &S::vm, &S::vrc}};
  if (grads) parts.push_back({LRK_DEV_GRADS, &S::ga, &S::gb, &S::gm, &S::grc});
  for (const Part& part : parts) {
    check(f.read(dev_, part.which, buf.data(), num_params_));
    size_t off = 0;
    // The next n floats of the buffer into v (n read before v itself may be reassigned: part 0).
    auto take = [&](std::vector<float>& v, size_t n) {
      v.assign(buf.begin() + static_cast<std::ptrdiff_t>(off), buf.begin() + static_cast<std::ptrdiff_t>(off + n));
      off += n;
    };
    for (int64_t l = 0; l < c.num_layers; l++)
      for (int p = 0; p < train::kNumProj; p++) {
        train::LoraSlot& s = engine.slot(l, p);
        if (s.r == 0) continue;
        if (s.core) {
          take(s.*part.r, static_cast<size_t>(s.r * s.r));
          continue;
        }
        const size_t na = s.a.size(), nb = s.b.size(), nm = s.m.size();
        take(s.*part.a, na);
        take(s.*part.b, nb);
        if (s.dora) take(s.*part.m, nm);
      }
  }
}

std::vector<int32_t> DeviceTrainer::generate(const train::Engine& engine, const int32_t* prompt, int64_t rows,
                                             int64_t prompt_len, int64_t max_new, const train::SampleOptions& o,
                                             const int64_t* left_pad) {
  const Fns& f = fns();
  // The caches go once the loop ends, whatever happens.
  struct Caches {
    const Fns& f;
    lrk_dev_engine* dev;
    ~Caches() { f.generate_end(dev); }
  } caches{f, dev_};
  auto forward = [&](const train::GenerateStep& st, float* logits) {
    if (st.p0 == 0) {  // the prefill: the arguments were checked; size the tables and caches
      upload_rope(engine, st.max_len);
      check(f.generate_begin(dev_, st.rows, st.max_len));
    }
    check(f.generate_step(dev_, st.t, st.p0, st.tokens->data(), st.pos->data(), st.key_start->data(), logits));
  };
  return train::generate_loop(engine.model().cfg, prompt, rows, prompt_len, max_new, o, left_pad, forward);
}

bool DeviceTrainer::set_matmul(bool bf16) {
  int effective = 0;
  check(fns().set_matmul(dev_, bf16 ? 1 : 0, &effective));
  return effective != 0;
}

void DeviceTrainer::upload_rope(const train::Engine& engine, int64_t seq) {
  if (seq <= rope_npos_) return;
  std::vector<float> cos, sin;
  train::rope_tables(engine.model().cfg, 0, seq, &cos, &sin);
  check(fns().set_rope(dev_, seq, cos.data(), sin.data()));
  rope_npos_ = seq;
}

train::LossSum DeviceTrainer::evaluate(const train::Engine& engine, const train::Batch& batch) {
  const HostBatch hb = host_batch(engine.model().cfg, batch);
  upload_rope(engine, batch.seq);
  const lrk_dev_batch db{batch.rows, batch.seq, batch.tokens, hb.targets.data(), hb.pos.data(), hb.doc.data()};
  train::LossSum loss;
  check(fns().forward(dev_, &db, &loss.sum, &loss.count));
  return loss;
}

train::StepResult DeviceTrainer::step(const train::Engine& engine, const train::OptimConfig& o, int64_t* step,
                                      const std::vector<train::Batch>& micro) {
  const Fns& f = fns();
  const train::ModelConfig& c = engine.model().cfg;
  train::check_optim(o);
  if (micro.empty()) throw Error("invalid_argument", "a training step needs at least one micro-batch");
  int64_t total = 0;
  for (const train::Batch& b : micro) {
    if (!b.labels) throw Error("invalid_argument", "every micro-batch of a training step needs labels");
    if (b.rows < 1 || b.seq < 1) throw Error("invalid_argument", "a batch needs at least one row of one token");
    if (b.seq > c.max_position_embeddings)
      throw Error("invalid_argument", "sequence length " + std::to_string(b.seq) + " exceeds max_position_embeddings (" +
                                          std::to_string(c.max_position_embeddings) + ")");
    for (int64_t r = 0; r < b.rows; r++)
      for (int64_t t = 0; t + 1 < b.seq; t++) total += train::predicts(b, r, t);
  }
  if (total == 0) throw Error("invalid_argument", "the step's micro-batches have no labelled token (all labels are -100)");
  train::StepResult res;
  res.tokens = total;
  check(f.set_recompute(dev_, engine.recompute() ? 1 : 0));
  check(f.zero_grad(dev_));
  const float p = engine.dropout();
  std::vector<uint64_t> streams(static_cast<size_t>(c.num_layers * train::kNumProj), 0);
  double loss_sum = 0;
  for (size_t k = 0; k < micro.size(); k++) {
    const train::Batch& b = micro[k];
    const HostBatch hb = host_batch(c, b);
    upload_rope(engine, b.seq);
    if (p > 0.0f)
      for (int64_t l = 0; l < c.num_layers; l++)
        for (int q = 0; q < train::kNumProj; q++)
          streams[static_cast<size_t>(l * train::kNumProj + q)] =
              stream_id("dropout:" + train::module_path(l, q) + ":" + std::to_string(*step) + ":" + std::to_string(k));
    const lrk_dev_batch db{b.rows, b.seq, b.tokens, hb.targets.data(), hb.pos.data(), hb.doc.data()};
    double ls = 0;
    int64_t cnt = 0;
    check(f.forward_backward(dev_, &db, static_cast<float>(1.0 / static_cast<double>(total)), p,
                             engine.dropout_seed(), streams.data(), &ls, &cnt));
    loss_sum += ls;
  }
  res.loss = loss_sum / static_cast<double>(total);
  res.lr = o.lr * train::lr_lambda(o, *step);
  const int64_t t = ++*step;
  check(f.optimizer_step(dev_, o.max_grad_norm, res.lr, o.beta1, o.beta2, o.eps, o.weight_decay, t, &res.grad_norm));
  return res;
}

}  // namespace lowrank::addon
