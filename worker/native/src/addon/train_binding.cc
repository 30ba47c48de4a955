// N-API bindings of the training engine (src/train). A model + its adapters + optimizer
// state live in one native session behind a JS External; loading, forward, backward and
// training steps run on libuv worker threads (Napi::AsyncWorker) under the session's
// mutex, so Node's event loop never waits on them and two calls never race.
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../train/engine.h"
#include "../train/optim.h"
#include "../train/parallel.h"
#include "bindings.h"
#include "device_trainer.h"
#include "napi_convert.h"

namespace lowrank::addon {

namespace {

using train::Batch;
using train::Engine;

struct Session {
  std::mutex mu;
  std::unique_ptr<Engine> engine;
  int64_t step = 0;  // optimizer steps taken (the scheduler's position)
  // The CUDA engine training this session (trainUseDevice), or null. The CPU engine's
  // slots stay the reference copy: host_stale when the device stepped since they were
  // read back, adapter_stale / weights_stale when the host changed what the device holds.
  std::unique_ptr<DeviceTrainer> device;
  bool host_stale = false, adapter_stale = false, weights_stale = false;
};

/** Re-uploads what the host changed since the device last saw it. */
void sync_device(Session& s) {
  if (s.weights_stale) s.device->upload_weights(*s.engine);
  if (s.adapter_stale) s.device->upload_adapter(*s.engine);
  s.weights_stale = s.adapter_stale = false;
}

/** Reads the device's adapter state back into the CPU engine before the host uses it. */
void sync_host(Session& s) {
  if (!s.device || !s.host_stale) return;
  s.device->download(*s.engine, true);
  s.host_stale = false;
}

using SessionPtr = std::shared_ptr<Session>;

SessionPtr get_session(Napi::Env env, Napi::Value v) {
  if (!v.IsExternal()) type_error(env, "session must be the handle loadModel returned");
  return *v.As<Napi::External<SessionPtr>>().Data();
}

/** Owned copies of a batch's arrays, so the worker thread never touches JS memory. */
struct OwnedBatch {
  std::vector<int32_t> tokens, labels, segments;
  bool has_labels = false, has_segments = false;
  int64_t rows = 0, seq = 0;
  Batch view() const {
    return Batch{tokens.data(), has_labels ? labels.data() : nullptr, has_segments ? segments.data() : nullptr, rows, seq};
  }
};

std::vector<int32_t> get_i32(Napi::Env env, Napi::Value v, size_t n, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    type_error(env, what + " must be an Int32Array");
  }
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  if (a.ElementLength() != n) {
    type_error(env, what + " has " + std::to_string(a.ElementLength()) + " entries, expected rows x seq = " + std::to_string(n));
  }
  return std::vector<int32_t>(a.Data(), a.Data() + n);
}

OwnedBatch get_batch(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsObject()) type_error(env, what + " must be { tokens, labels?, segments?, rows, seq }");
  Napi::Object o = v.As<Napi::Object>();
  OwnedBatch b;
  b.rows = get_int(env, o.Get("rows"), what + ".rows");
  b.seq = get_int(env, o.Get("seq"), what + ".seq");
  const auto n = static_cast<size_t>(b.rows * b.seq);
  b.tokens = get_i32(env, o.Get("tokens"), n, what + ".tokens");
  Napi::Value l = o.Get("labels");
  if (!l.IsUndefined() && !l.IsNull()) {
    b.labels = get_i32(env, l, n, what + ".labels");
    b.has_labels = true;
  }
  Napi::Value sg = o.Get("segments");
  if (!sg.IsUndefined() && !sg.IsNull()) {
    b.segments = get_i32(env, sg, n, what + ".segments");
    b.has_segments = true;
  }
  return b;
}

train::OptimConfig get_optim(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) type_error(env, "optimizer must be an object");
  Napi::Object o = v.As<Napi::Object>();
  train::OptimConfig c;
  auto num = [&](const char* key, double* out) {
    if (o.Has(key) && !o.Get(key).IsUndefined()) *out = get_double(env, o.Get(key), std::string("optimizer.") + key);
  };
  num("lr", &c.lr);
  num("beta1", &c.beta1);
  num("beta2", &c.beta2);
  num("eps", &c.eps);
  num("weightDecay", &c.weight_decay);
  num("maxGradNorm", &c.max_grad_norm);
  if (o.Has("schedule") && !o.Get("schedule").IsUndefined()) c.schedule = o.Get("schedule").ToString().Utf8Value();
  if (o.Has("warmupSteps") && !o.Get("warmupSteps").IsUndefined()) {
    c.warmup_steps = get_int(env, o.Get("warmupSteps"), "optimizer.warmupSteps");
  }
  if (o.Has("totalSteps") && !o.Get("totalSteps").IsUndefined()) {
    c.total_steps = get_int(env, o.Get("totalSteps"), "optimizer.totalSteps");
  }
  return c;
}

Napi::Object config_object(Napi::Env env, const train::Model& m) {
  const train::ModelConfig& c = m.cfg;
  Napi::Object o = Napi::Object::New(env);
  auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
  o.Set("modelType", Napi::String::New(env, c.model_type));
  num("vocabSize", static_cast<double>(c.vocab_size));
  num("hiddenSize", static_cast<double>(c.hidden_size));
  num("intermediateSize", static_cast<double>(c.intermediate_size));
  num("numLayers", static_cast<double>(c.num_layers));
  num("numHeads", static_cast<double>(c.num_heads));
  num("numKvHeads", static_cast<double>(c.num_kv_heads));
  num("headDim", static_cast<double>(c.head_dim));
  num("maxPositionEmbeddings", static_cast<double>(c.max_position_embeddings));
  num("ropeTheta", c.rope.theta);
  o.Set("ropeType", Napi::String::New(env, c.rope.type));
  o.Set("tieWordEmbeddings", Napi::Boolean::New(env, c.tie_word_embeddings));
  num("numParams", static_cast<double>(m.num_params()));
  return o;
}

/** AsyncWorker that runs `work` under the session lock and resolves with `done`'s value. */
class SessionWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  SessionWorker(Napi::Env env, SessionPtr s, Work work, Done done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), session_(std::move(s)),
        work_(std::move(work)), done_(std::move(done)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::lock_guard<std::mutex> lock(session_->mu);
      work_();
    } catch (const lowrank::Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "out_of_memory";
      SetError("out of memory in the native core");
    }
  }

  void OnOK() override { deferred_.Resolve(done_(Env())); }

  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  SessionPtr session_;
  Work work_;
  Done done_;
  std::string code_ = "internal";
};

Napi::Value queue(Napi::Env env, SessionPtr s, SessionWorker::Work work, SessionWorker::Done done) {
  auto* w = new SessionWorker(env, std::move(s), std::move(work), std::move(done));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// trainLoadModel(dir) -> Promise<{ session, config }>.
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsString()) type_error(env, "dir must be a string");
    std::string dir = info[0].As<Napi::String>().Utf8Value();
    auto s = std::make_shared<Session>();
    return queue(
        env, s, [s, dir]() { s->engine = std::make_unique<Engine>(train::load_model(dir)); },
        [s](Napi::Env e) -> Napi::Value {
          Napi::Object o = Napi::Object::New(e);
          o.Set("session", Napi::External<SessionPtr>::New(e, new SessionPtr(s), [](Napi::Env, SessionPtr* p) { delete p; }));
          o.Set("config", config_object(e, s->engine->model()));
          return o;
        });
  });
}

// trainSetLora(session, layer, proj, r, scale, A, B, magnitude?, R?): synchronous (copies small
// matrices); a magnitude Float32Array [out] makes the module DoRA, an R [r, r] LoRA-SB (only R trains).
Napi::Value SetLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    const train::ModelConfig& c = s->engine->model().cfg;
    int64_t layer = get_int(env, info[1], "layer");
    int64_t proj = get_int(env, info[2], "proj");
    int64_t r = get_int(env, info[3], "r");
    if (layer >= c.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    double scale = get_double(env, info[4], "scale");
    const int p = static_cast<int>(proj);
    Matrix a = get_matrix(env, info[5], r, c.proj_in(p), "A");
    Matrix b = get_matrix(env, info[6], c.proj_out(p), r, "B");
    Matrix mag;
    const bool dora = info.Length() > 7 && !info[7].IsUndefined() && !info[7].IsNull();
    if (dora) mag = get_matrix(env, info[7], 1, c.proj_out(p), "magnitude");
    s->engine->set_lora(layer, p, r, static_cast<float>(scale), a.ptr(), b.ptr(), dora ? mag.ptr() : nullptr);
    s->adapter_stale = true;
    if (info.Length() > 8 && !info[8].IsUndefined() && !info[8].IsNull()) {  // LoRA-SB core R [r, r]
      Matrix rc = get_matrix(env, info[8], r, r, "R");
      s->engine->set_lora_core(layer, p, rc.ptr());
    }
    return env.Undefined();
  });
}

// trainGetLora(session, layer, proj) -> { r, scale, A, B, gradA, gradB, magnitude?, gradMagnitude? } (r = 0: none).
Napi::Value GetLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer");
    int64_t proj = get_int(env, info[2], "proj");
    if (layer >= s->engine->model().cfg.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    const train::LoraSlot& sl = s->engine->slot(layer, static_cast<int>(proj));
    Napi::Object o = Napi::Object::New(env);
    o.Set("r", Napi::Number::New(env, static_cast<double>(sl.r)));
    o.Set("scale", Napi::Number::New(env, sl.scale));
    o.Set("A", to_f32(env, sl.a.data(), sl.a.size()));
    o.Set("B", to_f32(env, sl.b.data(), sl.b.size()));
    o.Set("gradA", to_f32(env, sl.ga.data(), sl.ga.size()));
    o.Set("gradB", to_f32(env, sl.gb.data(), sl.gb.size()));
    if (sl.core) {
      o.Set("R", to_f32(env, sl.rc.data(), sl.rc.size()));
      o.Set("gradR", to_f32(env, sl.grc.data(), sl.grc.size()));
    }
    if (sl.dora) {
      o.Set("magnitude", to_f32(env, sl.m.data(), sl.m.size()));
      o.Set("gradMagnitude", to_f32(env, sl.gm.data(), sl.gm.size()));
    }
    if (info.Length() > 3 && info[3].ToBoolean()) {  // with the AdamW moments (checkpoints)
      Napi::Object mo = Napi::Object::New(env);
      const std::pair<const char*, const std::vector<float>*> moments[] = {
          {"expAvgA", &sl.ma}, {"expAvgSqA", &sl.va}, {"expAvgB", &sl.mb},
          {"expAvgSqB", &sl.vb}, {"expAvgM", &sl.mm}, {"expAvgSqM", &sl.vm},
          {"expAvgR", &sl.mrc}, {"expAvgSqR", &sl.vrc}};
      for (const auto& [name, v] : moments)
        if (!v->empty()) mo.Set(name, to_f32(env, v->data(), v->size()));
      o.Set("moments", mo);
    }
    return o;
  });
}

// trainSetMoments(session, layer, proj, { expAvgA, expAvgSqA, expAvgB, expAvgSqB, expAvgM?, expAvgSqM? }):
// restores a checkpoint's AdamW state into an adapter set with the same shapes.
Napi::Value SetMoments(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer");
    int64_t proj = get_int(env, info[2], "proj");
    if (layer >= s->engine->model().cfg.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    if (!info[3].IsObject()) type_error(env, "moments must be an object");
    Napi::Object mo = info[3].As<Napi::Object>();
    train::LoraSlot& sl = s->engine->slot(layer, static_cast<int>(proj));
    const std::pair<const char*, std::vector<float>*> moments[] = {
        {"expAvgA", &sl.ma}, {"expAvgSqA", &sl.va}, {"expAvgB", &sl.mb},
        {"expAvgSqB", &sl.vb}, {"expAvgM", &sl.mm}, {"expAvgSqM", &sl.vm},
        {"expAvgR", &sl.mrc}, {"expAvgSqR", &sl.vrc}};
    for (const auto& [name, v] : moments) {
      if (v->empty()) continue;
      Matrix m = get_matrix(env, mo.Get(name), 1, static_cast<int64_t>(v->size()), std::string("moments.") + name);
      *v = std::move(m.data);
    }
    s->adapter_stale = true;
    return env.Undefined();
  });
}

// trainSetRecompute(session, on): activation recomputation (one layer's activations in memory).
Napi::Value SetRecompute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    s->engine->set_recompute(info[1].ToBoolean());
    return env.Undefined();
  });
}

// trainSetBaseWeight(session, layer, proj, W | null) / trainBaseWeight(session, layer, proj) -> Float32Array.
Napi::Value SetBaseWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer"), proj = get_int(env, info[2], "proj");
    const train::ModelConfig& c = s->engine->model().cfg;
    if (layer >= c.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    const int p = static_cast<int>(proj);
    if (info[3].IsNull() || info[3].IsUndefined()) {
      s->engine->set_base_weight(layer, p, nullptr);
    } else {
      Matrix w = get_matrix(env, info[3], c.proj_out(p), c.proj_in(p), "weight");
      s->engine->set_base_weight(layer, p, w.ptr());
    }
    s->weights_stale = true;
    return env.Undefined();
  });
}

Napi::Value BaseWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer"), proj = get_int(env, info[2], "proj");
    const train::ModelConfig& c = s->engine->model().cfg;
    if (layer >= c.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    const int p = static_cast<int>(proj);
    return to_f32(env, s->engine->base_weight(layer, p), static_cast<size_t>(c.proj_out(p) * c.proj_in(p)));
  });
}

// trainSetWeightGrad(session, layer, proj, on) / trainWeightGrad(session, layer, proj) -> Float32Array | null:
// the frozen weight's accumulated gradient dYᵀX (LoRA-GA, LoRA-SB).
Napi::Value SetWeightGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer"), proj = get_int(env, info[2], "proj");
    const train::ModelConfig& c = s->engine->model().cfg;
    if (layer >= c.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    s->engine->set_weight_grad(layer, static_cast<int>(proj), info[3].ToBoolean());
    return env.Undefined();
  });
}

Napi::Value WeightGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer"), proj = get_int(env, info[2], "proj");
    const train::ModelConfig& c = s->engine->model().cfg;
    if (layer >= c.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    const std::vector<float>& g = s->engine->weight_grad(layer, static_cast<int>(proj));
    if (g.empty()) return env.Null();
    return to_f32(env, g.data(), g.size());
  });
}

// trainModuleInput(session, layer, proj) -> Float32Array [rows·seq, in]: the projection's input in the last forward (EVA).
Napi::Value ModuleInput(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer"), proj = get_int(env, info[2], "proj");
    const train::ModelConfig& c = s->engine->model().cfg;
    if (layer >= c.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    const int p = static_cast<int>(proj);
    int64_t n = 0;
    const float* x = s->engine->module_input(layer, p, &n);
    return to_f32(env, x, static_cast<size_t>(n * c.proj_in(p)));
  });
}

// trainSetDropout(session, p, seed): PEFT's lora_dropout for training-mode forwards.
Napi::Value SetDropout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    s->engine->set_dropout(static_cast<float>(get_double(env, info[1], "p")), get_u64(env, info[2], "seed"));
    return env.Undefined();
  });
}

// trainDropoutMask(session, layer, proj, step, micro, n) -> Float32Array [n, in] of 0 or 1/(1-p).
Napi::Value DropoutMask(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    int64_t layer = get_int(env, info[1], "layer"), proj = get_int(env, info[2], "proj");
    if (layer >= s->engine->model().cfg.num_layers || proj >= train::kNumProj) type_error(env, "layer or proj is out of range");
    std::vector<float> m = s->engine->dropout_mask(layer, static_cast<int>(proj), get_int(env, info[3], "step"),
                                                   get_int(env, info[4], "micro"), get_int(env, info[5], "n"));
    return to_f32(env, m.data(), m.size());
  });
}

// trainGetStep(session) / trainSetStep(session, n): optimizer steps taken (the schedule's position).
Napi::Value GetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    return Napi::Number::New(env, static_cast<double>(s->step));
  });
}

Napi::Value SetStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::lock_guard<std::mutex> lock(s->mu);
    sync_host(*s);
    s->step = get_int(env, info[1], "step");
    return env.Undefined();
  });
}

// trainForward(session, batch, { logits, backward }) -> Promise<{ lossSum, count, logits? }>.
// backward: true also runs the backward pass of the mean loss (gradients replace old ones).
Napi::Value Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    auto batch = std::make_shared<OwnedBatch>(get_batch(env, info[1], "batch"));
    bool want_logits = false, backward = false, training = false;
    if (info[2].IsObject()) {
      want_logits = info[2].As<Napi::Object>().Get("logits").ToBoolean();
      backward = info[2].As<Napi::Object>().Get("backward").ToBoolean();
      training = info[2].As<Napi::Object>().Get("train").ToBoolean();
    }
    if (backward && !batch->has_labels) type_error(env, "backward needs batch.labels");
    auto logits = std::make_shared<std::vector<float>>();
    auto loss = std::make_shared<train::LossSum>();
    auto on_device = std::make_shared<bool>(false);
    return queue(
        env, s,
        [s, batch, logits, loss, want_logits, backward, training, on_device]() {
          // An evaluation (labels, loss only) runs on the device engine when there is one; logits,
          // gradients and training-mode forwards on the CPU engine, with the device state copied back.
          if (s->device && !want_logits && !backward && !training && batch->has_labels &&
              DeviceTrainer::unsupported(*s->engine).empty()) {
            sync_device(*s);
            *loss = s->device->evaluate(*s->engine, batch->view());
            *on_device = true;
            return;
          }
          sync_host(*s);
          if (want_logits) logits->resize(static_cast<size_t>(batch->rows * batch->seq * s->engine->model().cfg.vocab_size));
          // Training mode: dropout masks of (current step, micro-batch 0).
          s->engine->set_training(training, s->step, 0);
          try {
            *loss = s->engine->forward(batch->view(), want_logits ? logits->data() : nullptr);
            if (backward) {
              if (loss->count == 0) throw Error("invalid_argument", "backward: the batch has no labelled token");
              s->engine->zero_grad();
              s->engine->backward(static_cast<float>(1.0 / static_cast<double>(loss->count)));
            }
          } catch (...) {
            s->engine->set_training(false);
            throw;
          }
          s->engine->set_training(false);
        },
        [logits, loss, want_logits, on_device](Napi::Env e) -> Napi::Value {
          Napi::Object o = Napi::Object::New(e);
          o.Set("engine", Napi::String::New(e, *on_device ? "cuda" : "cpu"));
          o.Set("lossSum", Napi::Number::New(e, loss->sum));
          o.Set("count", Napi::Number::New(e, static_cast<double>(loss->count)));
          if (want_logits) o.Set("logits", to_f32(e, logits->data(), logits->size()));
          return o;
        });
  });
}

// trainStep(session, microBatches, optimizer) -> Promise<{ loss, tokens, gradNorm, lr, step }>.
Napi::Value TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    if (!info[1].IsArray()) type_error(env, "microBatches must be an array");
    Napi::Array arr = info[1].As<Napi::Array>();
    auto micro = std::make_shared<std::vector<OwnedBatch>>();
    for (uint32_t i = 0; i < arr.Length(); i++) micro->push_back(get_batch(env, arr.Get(i), "microBatches[" + std::to_string(i) + "]"));
    train::OptimConfig opt = get_optim(env, info[2]);
    train::check_optim(opt);
    auto res = std::make_shared<train::StepResult>();
    auto step = std::make_shared<int64_t>(0);
    auto on_device = std::make_shared<bool>(false);
    return queue(
        env, s,
        [s, micro, opt, res, step, on_device]() {
          std::vector<Batch> views;
          for (const OwnedBatch& b : *micro) views.push_back(b.view());
          if (s->device) {
            // The adapter may have changed to something the device engine lacks since trainUseDevice.
            const std::string why = DeviceTrainer::unsupported(*s->engine);
            if (!why.empty()) throw Error("invalid_argument", "the CUDA engine cannot train this adapter: " + why + " (release the device engine to train on the CPU)");
            sync_device(*s);
            s->host_stale = true;  // set before the step: a failure mid-step leaves the device state newer
            *res = s->device->step(*s->engine, opt, &s->step, views);
          } else {
            *res = train::train_step(*s->engine, opt, &s->step, views);
          }
          *step = s->step;
          *on_device = s->device != nullptr;
        },
        [res, step, on_device](Napi::Env e) -> Napi::Value {
          Napi::Object o = Napi::Object::New(e);
          o.Set("engine", Napi::String::New(e, *on_device ? "cuda" : "cpu"));
          o.Set("loss", Napi::Number::New(e, res->loss));
          o.Set("tokens", Napi::Number::New(e, static_cast<double>(res->tokens)));
          o.Set("gradNorm", Napi::Number::New(e, res->grad_norm));
          o.Set("lr", Napi::Number::New(e, res->lr));
          o.Set("step", Napi::Number::New(e, static_cast<double>(*step)));
          return o;
        });
  });
}

// trainUseDevice(session, precision = "f32") -> Promise<{ engine: "cuda", precision } |
// { engine: "cpu", reason }>: train this session's next steps on the CUDA engine (weights
// uploaded now), or say why not. precision "bf16" asks for bf16 matmuls on the bf16 frozen
// weights; the answer's precision is what will run ("f32" on the tiled GEMM or fp32 weights).
Napi::Value UseDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    std::string precision = "f32";
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      if (!info[1].IsString()) type_error(env, "precision must be \"f32\" or \"bf16\"");
      precision = info[1].As<Napi::String>().Utf8Value();
      if (precision != "f32" && precision != "bf16") type_error(env, "precision must be \"f32\" or \"bf16\", got \"" + precision + "\"");
    }
    auto reason = std::make_shared<std::string>();
    auto bf16 = std::make_shared<bool>(false);
    return queue(
        env, s,
        [s, reason, bf16, precision]() {
          if (!s->device) {
            *reason = DeviceTrainer::unsupported(*s->engine);
            if (!reason->empty()) return;
            try {
              s->device = DeviceTrainer::create(*s->engine);
            } catch (const Error& e) {
              if (std::string(e.code()) != "backend_unavailable") throw;
              *reason = e.what();
              return;
            }
            s->host_stale = s->adapter_stale = s->weights_stale = false;
          }
          *bf16 = s->device->set_matmul(precision == "bf16");
        },
        [reason, bf16](Napi::Env e) -> Napi::Value {
          Napi::Object o = Napi::Object::New(e);
          o.Set("engine", Napi::String::New(e, reason->empty() ? "cuda" : "cpu"));
          if (!reason->empty()) o.Set("reason", Napi::String::New(e, *reason));
          else o.Set("precision", Napi::String::New(e, *bf16 ? "bf16" : "f32"));
          return o;
        });
  });
}

// trainReleaseDevice(session) -> Promise<void>: reads the device's state back and frees it.
Napi::Value ReleaseDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    return queue(
        env, s,
        [s]() {
          sync_host(*s);
          s->device.reset();
        },
        [](Napi::Env e) -> Napi::Value { return e.Undefined(); });
  });
}

// trainLrLambda(optimizer, step) -> the schedule's multiplier (for tests and progress).
Napi::Value LrLambda(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    train::OptimConfig opt = get_optim(env, info[0]);
    train::check_optim(opt);
    return Napi::Number::New(env, train::lr_lambda(opt, get_int(env, info[1], "step")));
  });
}

// trainGenerate(session, prompt: Int32Array, rows, promptLen, maxNew, { temperature, topP, seed, eos }, leftPad?)
//   -> Promise<{ tokens: Int32Array [rows, maxNew], engine: "cpu" | "cuda" }>.
Napi::Value Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    SessionPtr s = get_session(env, info[0]);
    const int64_t rows = get_int(env, info[2], "rows"), prompt_len = get_int(env, info[3], "promptLen");
    const int64_t max_new = get_int(env, info[4], "maxNew");
    auto prompt = std::make_shared<std::vector<int32_t>>(get_i32(env, info[1], static_cast<size_t>(rows * prompt_len), "prompt"));
    train::SampleOptions o;
    if (info[5].IsObject()) {
      Napi::Object opt = info[5].As<Napi::Object>();
      if (!opt.Get("temperature").IsUndefined()) o.temperature = get_double(env, opt.Get("temperature"), "temperature");
      if (!opt.Get("topP").IsUndefined()) o.top_p = get_double(env, opt.Get("topP"), "topP");
      if (!opt.Get("seed").IsUndefined()) o.seed = get_u64(env, opt.Get("seed"), "seed");
      if (!opt.Get("eos").IsUndefined() && !opt.Get("eos").IsNull()) o.eos = static_cast<int32_t>(get_int(env, opt.Get("eos"), "eos"));
    }
    auto pad = std::make_shared<std::vector<int64_t>>();
    if (info.Length() > 6 && info[6].IsArray()) {
      Napi::Array a = info[6].As<Napi::Array>();
      if (a.Length() != static_cast<uint32_t>(rows)) type_error(env, "leftPad must have one entry per row");
      for (uint32_t i = 0; i < a.Length(); i++) pad->push_back(get_int(env, a.Get(i), "leftPad[i]"));
    }
    auto out = std::make_shared<std::vector<int32_t>>();
    auto on_device = std::make_shared<bool>(false);
    return queue(
        env, s,
        [s, prompt, rows, prompt_len, max_new, o, out, pad, on_device]() {
          const int64_t* left = pad->empty() ? nullptr : pad->data();
          // With a device engine the forward runs there (KV caches on the device); else on the CPU engine.
          if (s->device && DeviceTrainer::unsupported(*s->engine).empty()) {
            sync_device(*s);
            *out = s->device->generate(*s->engine, prompt->data(), rows, prompt_len, max_new, o, left);
            *on_device = true;
            return;
          }
          sync_host(*s);
          *out = s->engine->generate(prompt->data(), rows, prompt_len, max_new, o, left);
        },
        [out, on_device](Napi::Env e) -> Napi::Value {
          Napi::Int32Array a = Napi::Int32Array::New(e, out->size());
          if (!out->empty()) std::memcpy(a.Data(), out->data(), out->size() * sizeof(int32_t));
          Napi::Object r = Napi::Object::New(e);
          r.Set("tokens", a);
          r.Set("engine", Napi::String::New(e, *on_device ? "cuda" : "cpu"));
          return r;
        });
  });
}

// trainSetThreads(n) / trainThreads(): the engine's pool (its GEMMs run single-threaded BLAS per block).
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    int64_t n = get_int(env, info[0], "threads");
    if (n < 1 || n > 1024) type_error(env, "threads must be an integer in [1, 1024]");
    train::set_num_threads(static_cast<int>(n));
    return env.Undefined();
  });
}

Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), train::num_threads()); }

}  // namespace

void InitTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("trainLoadModel", Napi::Function::New(env, LoadModel));
  exports.Set("trainSetLora", Napi::Function::New(env, SetLora));
  exports.Set("trainGetLora", Napi::Function::New(env, GetLora));
  exports.Set("trainSetMoments", Napi::Function::New(env, SetMoments));
  exports.Set("trainSetRecompute", Napi::Function::New(env, SetRecompute));
  exports.Set("trainSetBaseWeight", Napi::Function::New(env, SetBaseWeight));
  exports.Set("trainBaseWeight", Napi::Function::New(env, BaseWeight));
  exports.Set("trainSetDropout", Napi::Function::New(env, SetDropout));
  exports.Set("trainSetWeightGrad", Napi::Function::New(env, SetWeightGrad));
  exports.Set("trainWeightGrad", Napi::Function::New(env, WeightGrad));
  exports.Set("trainModuleInput", Napi::Function::New(env, ModuleInput));
  exports.Set("trainDropoutMask", Napi::Function::New(env, DropoutMask));
  exports.Set("trainGetStep", Napi::Function::New(env, GetStep));
  exports.Set("trainSetStep", Napi::Function::New(env, SetStep));
  exports.Set("trainForward", Napi::Function::New(env, Forward));
  exports.Set("trainStep", Napi::Function::New(env, TrainStep));
  exports.Set("trainUseDevice", Napi::Function::New(env, UseDevice));
  exports.Set("trainReleaseDevice", Napi::Function::New(env, ReleaseDevice));
  exports.Set("trainLrLambda", Napi::Function::New(env, LrLambda));
  exports.Set("trainGenerate", Napi::Function::New(env, Generate));
  exports.Set("trainSetThreads", Napi::Function::New(env, SetThreads));
  exports.Set("trainThreads", Napi::Function::New(env, Threads));
}

}  // namespace lowrank::addon
