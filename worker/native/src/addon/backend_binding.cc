// N-API bindings of the backend layer: backendInfo() and backendOps.<op>(backend, args),
// which runs one op of backend_ops.h on "cpu", "cuda" or "active" (the resolved one). The
// cross-backend test vectors and the fallback tests use it; inputs are copied, results
// returned as new typed arrays. The TS wrapper (worker/src/native/backend.ts) validates first.
#include <cstring>
#include <string>
#include <vector>

#include "backend_select.h"
#include "bindings.h"
#include "napi_convert.h"

namespace lowrank::addon {

namespace {

std::vector<float> f32(Napi::Env env, Napi::Object o, const char* key, int64_t n) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(env, std::string(key) + " must be a Float32Array");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (static_cast<int64_t>(a.ElementLength()) != n)
    type_error(env, std::string(key) + " has " + std::to_string(a.ElementLength()) + " entries, expected " + std::to_string(n));
  return std::vector<float>(a.Data(), a.Data() + n);
}

int64_t num(Napi::Env env, Napi::Object o, const char* key) { return get_int(env, o.Get(key), key); }

// W: a Float32Array (f32) or a Uint16Array of bf16 bits, out·in entries.
std::vector<uint8_t> weight(Napi::Env env, Napi::Object o, int64_t count, lrk_dtype* dt) {
  Napi::Value v = o.Get("w");
  if (!v.IsTypedArray()) type_error(env, "w must be a Float32Array or a Uint16Array of bf16 bits");
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  if (a.TypedArrayType() == napi_float32_array) *dt = LRK_F32;
  else if (a.TypedArrayType() == napi_uint16_array) *dt = LRK_BF16;
  else type_error(env, "w must be a Float32Array or a Uint16Array of bf16 bits");
  if (static_cast<int64_t>(a.ElementLength()) != count)
    type_error(env, "w has " + std::to_string(a.ElementLength()) + " entries, expected out * in = " + std::to_string(count));
  const auto* p = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  return std::vector<uint8_t>(p, p + a.ByteLength());
}

void check(Napi::Env env, const lrk_ops& ops, lrk_status s, const char* op) {
  if (s == LRK_OK) return;
  Napi::Error err = Napi::Error::New(env, std::string(op) + ": " + ops.last_error());
  err.Set("code", Napi::String::New(env, s == LRK_DEVICE_ERROR ? "device_error" : "invalid_argument"));
  throw err;
}

const lrk_ops& pick(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) type_error(info.Env(), "backend must be \"cpu\", \"cuda\" or \"active\"");
  if (!info[1].IsObject()) type_error(info.Env(), "the op's arguments must be an object");
  return ops_for(info[0].As<Napi::String>().Utf8Value());
}

Napi::Object result(Napi::Env env, std::initializer_list<std::pair<const char*, const std::vector<float>*>> fields) {
  Napi::Object o = Napi::Object::New(env);
  for (const auto& [k, v] : fields) o.Set(k, to_f32(env, v->data(), v->size()));
  return o;
}

Napi::Value LoraForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n"), in = num(env, o, "in"), out = num(env, o, "out"), r = num(env, o, "r");
    const auto scale = static_cast<float>(get_double(env, o.Get("scale"), "scale"));
    lrk_dtype dt;
    std::vector<uint8_t> w = weight(env, o, out * in, &dt);
    std::vector<float> x = f32(env, o, "x", n * in), a = f32(env, o, "a", r * in), b = f32(env, o, "b", out * r);
    std::vector<float> y(static_cast<size_t>(n * out)), h(static_cast<size_t>(n * r));
    check(env, ops, ops.lora_forward(n, in, out, r, scale, x.data(), w.data(), dt, a.data(), b.data(), y.data(), h.data()),
          "loraForward");
    return result(env, {{"y", &y}, {"h", &h}});
  });
}

Napi::Value LoraBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n"), in = num(env, o, "in"), out = num(env, o, "out"), r = num(env, o, "r");
    const auto scale = static_cast<float>(get_double(env, o.Get("scale"), "scale"));
    lrk_dtype dt;
    std::vector<uint8_t> w = weight(env, o, out * in, &dt);
    std::vector<float> x = f32(env, o, "x", n * in), h = f32(env, o, "h", n * r), dy = f32(env, o, "dy", n * out);
    std::vector<float> a = f32(env, o, "a", r * in), b = f32(env, o, "b", out * r);
    std::vector<float> ga = f32(env, o, "ga", r * in), gb = f32(env, o, "gb", out * r);
    std::vector<float> dx(static_cast<size_t>(n * in));
    check(env, ops,
          ops.lora_backward(n, in, out, r, scale, x.data(), h.data(), dy.data(), w.data(), dt, a.data(), b.data(),
                            dx.data(), ga.data(), gb.data()),
          "loraBackward");
    return result(env, {{"dx", &dx}, {"ga", &ga}, {"gb", &gb}});
  });
}

Napi::Value AdamW(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n");
    std::vector<float> p = f32(env, o, "p", n), g = f32(env, o, "g", n), m = f32(env, o, "m", n), v = f32(env, o, "v", n);
    auto d = [&](const char* k) { return get_double(env, o.Get(k), k); };
    check(env, ops,
          ops.adamw(n, p.data(), g.data(), m.data(), v.data(), d("lr"), d("beta1"), d("beta2"), d("eps"),
                    d("weightDecay"), num(env, o, "step")),
          "adamw");
    return result(env, {{"p", &p}, {"m", &m}, {"v", &v}});
  });
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n"), d = num(env, o, "d");
    std::vector<float> x = f32(env, o, "x", n * d), w = f32(env, o, "w", d);
    std::vector<float> y(static_cast<size_t>(n * d)), rstd(static_cast<size_t>(n));
    check(env, ops, ops.rmsnorm_forward(n, d, get_double(env, o.Get("eps"), "eps"), x.data(), w.data(), y.data(), rstd.data()),
          "rmsnorm");
    return result(env, {{"y", &y}, {"rstd", &rstd}});
  });
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n"), heads = num(env, o, "heads"), hd = num(env, o, "headDim");
    const int64_t npos = num(env, o, "npos");
    std::vector<float> x = f32(env, o, "x", n * heads * hd);
    std::vector<float> c = f32(env, o, "cos", npos * (hd / 2)), s = f32(env, o, "sin", npos * (hd / 2));
    Napi::Value pv = o.Get("pos");
    if (!pv.IsTypedArray() || pv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        static_cast<int64_t>(pv.As<Napi::Int32Array>().ElementLength()) != n)
      type_error(env, "pos must be an Int32Array of n entries");
    Napi::Int32Array pa = pv.As<Napi::Int32Array>();
    std::vector<int64_t> pos(pa.Data(), pa.Data() + n);
    check(env, ops,
          ops.rope_apply(x.data(), n, heads * hd, heads, hd, pos.data(), npos, c.data(), s.data(),
                         o.Get("inverse").ToBoolean() ? 1 : 0),
          "rope");
    return result(env, {{"x", &x}});
  });
}

Napi::Value SwiGlu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n");
    std::vector<float> g = f32(env, o, "gate", n), u = f32(env, o, "up", n), act(static_cast<size_t>(n));
    check(env, ops, ops.swiglu_forward(n, g.data(), u.data(), act.data()), "swiglu");
    return result(env, {{"act", &act}});
  });
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t T = num(env, o, "T"), h = num(env, o, "heads"), kvh = num(env, o, "kvHeads"), hd = num(env, o, "headDim");
    std::vector<float> q = f32(env, o, "q", T * h * hd), k = f32(env, o, "k", T * kvh * hd), v = f32(env, o, "v", T * kvh * hd);
    std::vector<float> out(static_cast<size_t>(T * h * hd));
    check(env, ops, ops.attention_forward(T, h, kvh, hd, q.data(), k.data(), v.data(), out.data()), "attention");
    return result(env, {{"out", &out}});
  });
}

Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n"), d = num(env, o, "d");
    std::vector<float> x = f32(env, o, "x", n * d), w = f32(env, o, "w", d), rstd = f32(env, o, "rstd", n);
    std::vector<float> dy = f32(env, o, "dy", n * d), dx = f32(env, o, "dx", n * d);
    check(env, ops,
          ops.rmsnorm_backward(n, d, x.data(), w.data(), rstd.data(), dy.data(), dx.data(),
                               o.Get("accumulate").ToBoolean() ? 1 : 0),
          "rmsnormBackward");
    return result(env, {{"dx", &dx}});
  });
}

Napi::Value SwiGluBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n");
    std::vector<float> g = f32(env, o, "gate", n), u = f32(env, o, "up", n), da = f32(env, o, "dact", n);
    std::vector<float> dg(static_cast<size_t>(n)), du(static_cast<size_t>(n));
    check(env, ops, ops.swiglu_backward(n, g.data(), u.data(), da.data(), dg.data(), du.data()), "swigluBackward");
    return result(env, {{"dgate", &dg}, {"dup", &du}});
  });
}

// crossEntropy(backend, { n, vocab, logits, labels: Int32Array, scale }) -> { loss, dlogits }.
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n"), vocab = num(env, o, "vocab");
    std::vector<float> z = f32(env, o, "logits", n * vocab);
    Napi::Value lv = o.Get("labels");
    if (!lv.IsTypedArray() || lv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        static_cast<int64_t>(lv.As<Napi::Int32Array>().ElementLength()) != n)
      type_error(env, "labels must be an Int32Array of n entries");
    Napi::Int32Array la = lv.As<Napi::Int32Array>();
    std::vector<int32_t> labels(la.Data(), la.Data() + n);
    std::vector<float> loss(static_cast<size_t>(n)), g(static_cast<size_t>(n * vocab));
    check(env, ops,
          ops.cross_entropy(n, vocab, z.data(), labels.data(), static_cast<float>(get_double(env, o.Get("scale"), "scale")),
                            loss.data(), g.data()),
          "crossEntropy");
    return result(env, {{"loss", &loss}, {"dlogits", &g}});
  });
}

// dropoutMask(backend, { seed, stream, offset, n, p }) -> { mask }; seed/stream BigInt or safe integers.
Napi::Value DropoutMask(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t n = num(env, o, "n");
    std::vector<float> mask(static_cast<size_t>(n));
    check(env, ops,
          ops.dropout_mask(get_u64(env, o.Get("seed"), "seed"), get_u64(env, o.Get("stream"), "stream"),
                           get_u64(env, o.Get("offset"), "offset"), n, static_cast<float>(get_double(env, o.Get("p"), "p")),
                           mask.data()),
          "dropoutMask");
    return result(env, {{"mask", &mask}});
  });
}

Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t T = num(env, o, "T"), h = num(env, o, "heads"), kvh = num(env, o, "kvHeads"), hd = num(env, o, "headDim");
    std::vector<float> q = f32(env, o, "q", T * h * hd), k = f32(env, o, "k", T * kvh * hd), v = f32(env, o, "v", T * kvh * hd);
    std::vector<float> dout = f32(env, o, "dout", T * h * hd);
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    check(env, ops,
          ops.attention_backward(T, h, kvh, hd, q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(), dv.data()),
          "attentionBackward");
    return result(env, {{"dq", &dq}, {"dk", &dk}, {"dv", &dv}});
  });
}

// factorSum(backend, { out, in, terms: [{ r, a, b, weight }] }) -> { delta }.
Napi::Value FactorSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const lrk_ops& ops = pick(info);
    Napi::Object o = info[1].As<Napi::Object>();
    const int64_t out = num(env, o, "out"), in = num(env, o, "in");
    if (!o.Get("terms").IsArray()) type_error(env, "terms must be an array of { r, a, b, weight }");
    Napi::Array terms = o.Get("terms").As<Napi::Array>();
    std::vector<std::vector<float>> as, bs;
    std::vector<int64_t> ranks;
    std::vector<float> weights;
    for (uint32_t i = 0; i < terms.Length(); i++) {
      if (!terms.Get(i).IsObject()) type_error(env, "terms[" + std::to_string(i) + "] must be { r, a, b, weight }");
      Napi::Object t = terms.Get(i).As<Napi::Object>();
      const int64_t r = num(env, t, "r");
      ranks.push_back(r);
      as.push_back(f32(env, t, "a", r * in));
      bs.push_back(f32(env, t, "b", out * r));
      weights.push_back(static_cast<float>(get_double(env, t.Get("weight"), "weight")));
    }
    std::vector<const float*> ap, bp;
    for (size_t i = 0; i < as.size(); i++) {
      ap.push_back(as[i].data());
      bp.push_back(bs[i].data());
    }
    std::vector<float> delta(static_cast<size_t>(out * in));
    check(env, ops,
          ops.factor_sum(static_cast<int64_t>(ranks.size()), ranks.data(), out, in, bp.data(), ap.data(), weights.data(),
                         delta.data()),
          "factorSum");
    return result(env, {{"delta", &delta}});
  });
}

// cudaBenchLoraLayer({ tokens, hidden, intermediate, qDim, kvDim, rank, iters }) ->
// { msPerIter, bytesHeld }: liblowrank_cuda.so's device-resident LoRA-layer benchmark.
Napi::Value CudaBench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    using Bench = lrk_status (*)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, double*, double*);
    auto bench = reinterpret_cast<Bench>(cuda_symbol("lrk_cuda_bench_lora_layer"));
    if (!bench) {
      throw Error("backend_unavailable", "the CUDA benchmark needs the CUDA backend: " + backend_info().reason);
    }
    if (!info[0].IsObject()) type_error(env, "cudaBenchLoraLayer takes { tokens, hidden, intermediate, qDim, kvDim, rank, iters }");
    Napi::Object o = info[0].As<Napi::Object>();
    double ms = 0, bytes = 0;
    const lrk_status s = bench(num(env, o, "tokens"), num(env, o, "hidden"), num(env, o, "intermediate"), num(env, o, "qDim"),
                               num(env, o, "kvDim"), num(env, o, "rank"), static_cast<int>(num(env, o, "iters")), &ms, &bytes);
    check(env, *cuda_ops(), s, "cudaBenchLoraLayer");
    Napi::Object r = Napi::Object::New(env);
    r.Set("msPerIter", ms);
    r.Set("bytesHeld", bytes);
    return r;
  });
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const BackendInfo& b = backend_info();
    Napi::Object o = Napi::Object::New(env);
    o.Set("requested", b.requested);
    o.Set("backend", b.backend);
    o.Set("cudaAvailable", b.cuda_available);
    if (!b.reason.empty()) o.Set("reason", b.reason);
    if (!b.device.empty()) o.Set("device", b.device);
    if (!b.library.empty()) o.Set("library", b.library);
    if (b.backend == "cuda") {
      // Optional symbols: a library built before them simply has no gemm/memory figures.
      if (auto gemm = reinterpret_cast<void (*)(char*, size_t)>(cuda_symbol("lrk_cuda_gemm_info"))) {
        char buf[512] = {0};
        gemm(buf, sizeof buf);
        o.Set("gemm", std::string(buf));
      }
      if (auto svd = reinterpret_cast<int (*)(char*, size_t)>(cuda_symbol("lrk_cuda_svd_info"))) {
        char buf[512] = {0};
        svd(buf, sizeof buf);
        o.Set("svd", std::string(buf));
      }
      if (auto mem = reinterpret_cast<void (*)(int64_t*, int64_t*, int)>(cuda_symbol("lrk_cuda_memory"))) {
        int64_t now = 0, peak = 0;
        mem(&now, &peak, 0);
        o.Set("deviceBytes", static_cast<double>(now));
        o.Set("deviceBytesPeak", static_cast<double>(peak));
      }
    }
    return o;
  });
}

}  // namespace

void InitBackend(Napi::Env env, Napi::Object exports) {
  exports.Set("backendInfo", Napi::Function::New(env, Info, "backendInfo"));
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("loraForward", Napi::Function::New(env, LoraForward, "loraForward"));
  ops.Set("loraBackward", Napi::Function::New(env, LoraBackward, "loraBackward"));
  ops.Set("adamw", Napi::Function::New(env, AdamW, "adamw"));
  ops.Set("rmsnorm", Napi::Function::New(env, RmsNorm, "rmsnorm"));
  ops.Set("rope", Napi::Function::New(env, Rope, "rope"));
  ops.Set("swiglu", Napi::Function::New(env, SwiGlu, "swiglu"));
  ops.Set("attention", Napi::Function::New(env, Attention, "attention"));
  ops.Set("factorSum", Napi::Function::New(env, FactorSum, "factorSum"));
  ops.Set("rmsnormBackward", Napi::Function::New(env, RmsNormBackward, "rmsnormBackward"));
  ops.Set("swigluBackward", Napi::Function::New(env, SwiGluBackward, "swigluBackward"));
  ops.Set("crossEntropy", Napi::Function::New(env, CrossEntropy, "crossEntropy"));
  ops.Set("dropoutMask", Napi::Function::New(env, DropoutMask, "dropoutMask"));
  ops.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
  exports.Set("backendOps", ops);
  exports.Set("cudaBenchLoraLayer", Napi::Function::New(env, CudaBench, "cudaBenchLoraLayer"));
}

}  // namespace lowrank::addon
