// N-API bindings for the delta-space merges (mergekit semantics, Model Stock, LEGO) and
// the dense compressions (truncated-SVD factoring, EoRA, CUR, int8/RTN quantization).
// Synchronous: each call is one module's work; the TS wrappers validate arguments first.
#include <string>

#include "bindings.h"
#include "lowrank/compress_base.h"
#include "lowrank/lego.h"
#include "lowrank/merge_delta.h"
#include "lowrank/quantize.h"
#include "lowrank/rng.h"
#include "napi_convert.h"

namespace lowrank::addon {

namespace {

bool has(Napi::Object o, const char* key) { return o.Has(key) && !o.Get(key).IsUndefined() && !o.Get(key).IsNull(); }

std::vector<double> get_doubles(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsArray()) type_error(env, what + " must be an array of numbers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<double> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(get_double(env, a.Get(i), what + "[" + std::to_string(i) + "]"));
  return out;
}

std::vector<LoraModule> get_modules(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsArray()) type_error(env, what + " must be an array of modules");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<LoraModule> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(get_module(env, a.Get(i), what + "[" + std::to_string(i) + "]"));
  return out;
}

Napi::Array to_numbers(Napi::Env env, const std::vector<int64_t>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), static_cast<double>(v[i]));
  return a;
}

Napi::Array to_numbers(Napi::Env env, const std::vector<double>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), v[i]);
  return a;
}

// mergeDeltas(deltas[], {method, weights, density, signMethod, lambda, normalize, rescale, seed, module, masks}).
Napi::Value MergeDeltas(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsArray()) type_error(env, "deltas must be an array of matrices");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<Matrix> deltas;
    for (uint32_t i = 0; i < arr.Length(); i++) deltas.push_back(get_dense(env, arr.Get(i), "deltas[" + std::to_string(i) + "]"));
    if (!info[1].IsObject()) type_error(env, "options must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    DeltaMergeOptions opts;
    opts.method = parse_delta_method(o.Get("method").ToString().Utf8Value());
    opts.weights = get_doubles(env, o.Get("weights"), "options.weights");
    if (has(o, "density")) opts.density = get_double(env, o.Get("density"), "options.density");
    if (has(o, "signMethod")) opts.sign = o.Get("signMethod").ToString().Utf8Value() == "frequency" ? SignMethod::kFrequency : SignMethod::kTotal;
    if (has(o, "lambda")) opts.lambda = get_double(env, o.Get("lambda"), "options.lambda");
    if (has(o, "normalize")) opts.normalize = o.Get("normalize").ToBoolean() ? 1 : 0;
    if (has(o, "rescale")) opts.rescale = o.Get("rescale").ToBoolean() ? 1 : 0;
    if (has(o, "seed")) opts.seed = get_u64(env, o.Get("seed"), "options.seed");
    if (has(o, "module")) opts.module = o.Get("module").ToString().Utf8Value();
    if (has(o, "masks")) {
      Napi::Array masks = o.Get("masks").As<Napi::Array>();
      for (uint32_t i = 0; i < masks.Length(); i++) {
        Napi::Value mv = masks.Get(i);
        if (!mv.IsTypedArray() || mv.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
          type_error(env, "options.masks[" + std::to_string(i) + "] must be a Uint8Array");
        Napi::Uint8Array a = mv.As<Napi::Uint8Array>();
        opts.masks.emplace_back(a.Data(), a.Data() + a.ElementLength());
      }
    }
    return to_dense(env, merge_deltas(std::move(deltas), opts));
  });
}

// factorDense(m, {rank, energy, maxRank, randomized, oversample, niter, seed, purpose, split}).
Napi::Value FactorDense(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Matrix m = get_dense(env, info[0], "m");
    Napi::Object o = info[1].As<Napi::Object>();
    DenseFactorOptions opts;
    if (has(o, "rank")) opts.choice.rank = get_int(env, o.Get("rank"), "options.rank");
    if (has(o, "energy")) opts.choice.energy = get_double(env, o.Get("energy"), "options.energy");
    if (has(o, "maxRank")) opts.choice.max_rank = get_int(env, o.Get("maxRank"), "options.maxRank");
    opts.randomized = o.Get("randomized").ToBoolean();
    if (has(o, "oversample")) opts.oversample = get_int(env, o.Get("oversample"), "options.oversample");
    if (has(o, "niter")) opts.niter = static_cast<int>(get_int(env, o.Get("niter"), "options.niter"));
    if (has(o, "seed")) opts.seed = get_u64(env, o.Get("seed"), "options.seed");
    if (has(o, "purpose")) opts.stream = stream_id(o.Get("purpose").ToString().Utf8Value());
    opts.split = has(o, "split") && o.Get("split").ToString().Utf8Value() == "b_heavy" ? Split::kBHeavy : Split::kBalanced;
    DenseFactorResult r = factor_dense(m, opts);
    Napi::Object res = Napi::Object::New(env);
    res.Set("module", to_module(env, r.module));
    res.Set("sigma", to_f32(env, r.sigma.data(), r.sigma.size()));
    res.Set("retainedEnergy", r.retained_energy);
    res.Set("relError", r.rel_error);
    return res;
  });
}

Napi::Value ModelStock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    ModelStockResult r = model_stock(get_modules(env, info[0], "inputs"), info[1].ToBoolean());
    Napi::Object res = Napi::Object::New(env);
    res.Set("module", to_module(env, r.module));
    res.Set("cos", to_numbers(env, r.cos));
    res.Set("t", to_numbers(env, r.t));
    res.Set("clamped", static_cast<double>(r.clamped));
    return res;
  });
}

// legoMerge(inputs, weights, {k, distance, reweightParameters, reweightOutput, maxIterations, seed, module}).
Napi::Value LegoMerge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::vector<LoraModule> inputs = get_modules(env, info[0], "inputs");
    std::vector<double> weights = get_doubles(env, info[1], "weights");
    Napi::Object o = info[2].As<Napi::Object>();
    LegoOptions opts;
    if (has(o, "k")) opts.k = get_int(env, o.Get("k"), "options.k");
    if (has(o, "distance")) opts.cosine = o.Get("distance").ToString().Utf8Value() != "euclidean";
    if (has(o, "reweightParameters")) opts.reweight_parameters = o.Get("reweightParameters").ToBoolean();
    if (has(o, "reweightOutput")) opts.reweight_output = o.Get("reweightOutput").ToBoolean();
    if (has(o, "maxIterations")) opts.max_iterations = static_cast<int>(get_int(env, o.Get("maxIterations"), "options.maxIterations"));
    if (has(o, "seed")) opts.seed = get_u64(env, o.Get("seed"), "options.seed");
    if (has(o, "module")) opts.module = o.Get("module").ToString().Utf8Value();
    LegoResult r = lego_merge(inputs, weights, opts);
    Napi::Object res = Napi::Object::New(env);
    res.Set("module", to_module(env, r.module));
    res.Set("assignment", to_numbers(env, r.assignment));
    res.Set("sizes", to_numbers(env, r.sizes));
    res.Set("gamma", r.gamma);
    res.Set("iterations", r.iterations);
    return res;
  });
}

// eora(delta, x, rank, eigenFloor).
Napi::Value Eora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    EoraResult r = eora(get_dense(env, info[0], "delta"), get_dense(env, info[1], "x"), get_int(env, info[2], "rank"),
                        get_double(env, info[3], "eigenFloor"));
    Napi::Object res = Napi::Object::New(env);
    res.Set("module", to_module(env, r.module));
    Napi::Float64Array ev = Napi::Float64Array::New(env, r.eigenvalues.size());
    for (size_t i = 0; i < r.eigenvalues.size(); i++) ev[i] = r.eigenvalues[i];
    res.Set("eigenvalues", ev);
    res.Set("floored", static_cast<double>(r.floored));
    res.Set("errorBefore", r.error_before);
    res.Set("errorAfter", r.error_after);
    return res;
  });
}

// curDecompose(w, k, colWeight?: Float32Array).
Napi::Value CurDecompose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Matrix w = get_dense(env, info[0], "w");
    std::vector<float> cw;
    if (info.Length() > 2 && info[2].IsTypedArray()) {
      Napi::Float32Array a = info[2].As<Napi::Float32Array>();
      cw.assign(a.Data(), a.Data() + a.ElementLength());
    }
    CurResult r = cur_decompose(w, get_int(env, info[1], "k"), cw);
    Napi::Object res = Napi::Object::New(env);
    res.Set("rows", to_numbers(env, r.rows));
    res.Set("cols", to_numbers(env, r.cols));
    res.Set("c", to_dense(env, r.c));
    res.Set("u", to_dense(env, r.u));
    res.Set("r", to_dense(env, r.r));
    res.Set("relError", r.rel_error);
    return res;
  });
}

Napi::Value Deim(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return to_numbers(env, deim(get_dense(env, info[0], "v"))); });
}

Napi::Value QuantizeInt8Rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    QuantizedRows q = quantize_int8_rows(get_dense(env, info[0], "m"));
    Napi::Object res = Napi::Object::New(env);
    res.Set("rows", static_cast<double>(q.rows));
    res.Set("cols", static_cast<double>(q.cols));
    Napi::Int8Array qa = Napi::Int8Array::New(env, q.q.size());
    if (!q.q.empty()) std::memcpy(qa.Data(), q.q.data(), q.q.size());
    res.Set("q", qa);
    res.Set("scale", to_f32(env, q.scale.data(), q.scale.size()));
    return res;
  });
}

Napi::Value DequantizeInt8Rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = info[0].As<Napi::Object>();
    QuantizedRows q;
    q.rows = get_int(env, o.Get("rows"), "q.rows");
    q.cols = get_int(env, o.Get("cols"), "q.cols");
    Napi::Value qv = o.Get("q");
    if (!qv.IsTypedArray() || qv.As<Napi::TypedArray>().TypedArrayType() != napi_int8_array) type_error(env, "q.q must be an Int8Array");
    Napi::Int8Array qa = qv.As<Napi::Int8Array>();
    q.q.assign(qa.Data(), qa.Data() + qa.ElementLength());
    q.scale.resize(static_cast<size_t>(q.rows));
    Matrix s = get_matrix(env, o.Get("scale"), q.rows, 1, "q.scale");
    q.scale.assign(s.data.begin(), s.data.end());
    return to_dense(env, dequantize_int8_rows(q));
  });
}

Napi::Value RtnQuantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    return to_dense(env, rtn_quantize(get_dense(env, info[0], "w"), static_cast<int>(get_int(env, info[1], "bits")),
                                      get_int(env, info[2], "groupSize")));
  });
}

}  // namespace

void InitDelta(Napi::Env env, Napi::Object exports) {
  exports.Set("mergeDeltas", Napi::Function::New(env, MergeDeltas));
  exports.Set("factorDense", Napi::Function::New(env, FactorDense));
  exports.Set("modelStock", Napi::Function::New(env, ModelStock));
  exports.Set("legoMerge", Napi::Function::New(env, LegoMerge));
  exports.Set("eora", Napi::Function::New(env, Eora));
  exports.Set("curDecompose", Napi::Function::New(env, CurDecompose));
  exports.Set("deim", Napi::Function::New(env, Deim));
  exports.Set("quantizeInt8Rows", Napi::Function::New(env, QuantizeInt8Rows));
  exports.Set("dequantizeInt8Rows", Napi::Function::New(env, DequantizeInt8Rows));
  exports.Set("rtnQuantize", Napi::Function::New(env, RtnQuantize));
}

}  // namespace lowrank::addon
