// N-API bindings for the dense linear algebra, the factored adapter algebra, spectra and
// the Philox stream. Synchronous: each call is one module's worth of work. The merge
// (minutes on a 7B adapter set) is bound asynchronously in merge_binding.cc.
#include <string>

#include "bindings.h"
#include "lowrank/adapter.h"
#include "lowrank/linalg.h"
#include "lowrank/merge_ops.h"
#include "lowrank/rng.h"
#include "lowrank/spectra.h"
#include "napi_convert.h"

namespace lowrank::addon {

void InitMerge(Napi::Env env, Napi::Object exports);  // merge_binding.cc

namespace {

// matmul(a, transA, b, transB, alpha, beta, c?) -> alpha op(a) op(b) + beta c.
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Matrix a = get_dense(env, info[0], "a");
    Matrix b = get_dense(env, info[2], "b");
    bool ta = info[1].ToBoolean(), tb = info[3].ToBoolean();
    float alpha = static_cast<float>(get_double(env, info[4], "alpha"));
    if (info.Length() < 7 || info[6].IsUndefined()) return to_dense(env, matmul(a, ta, b, tb, alpha));
    int64_t m = ta ? a.cols : a.rows, n = tb ? b.rows : b.cols, k = ta ? a.rows : a.cols;
    if ((tb ? b.cols : b.rows) != k) type_error(env, "matmul: the inner dimensions of op(a) and op(b) differ");
    Matrix c = get_dense(env, info[6], "c");
    if (c.rows != m || c.cols != n) type_error(env, "matmul: c must be [m, n] = [" + std::to_string(m) + ", " + std::to_string(n) + "]");
    gemm(ta, tb, m, n, k, alpha, a.ptr(), a.cols, b.ptr(), b.cols, static_cast<float>(get_double(env, info[5], "beta")),
         c.ptr(), n);
    return to_dense(env, c);
  });
}

Napi::Value Qr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Matrix q, r;
    qr_thin(get_dense(env, info[0], "m"), &q, &r);
    Napi::Object o = Napi::Object::New(env);
    o.Set("q", to_dense(env, q));
    o.Set("r", to_dense(env, r));
    return o;
  });
}

// svd(m, f64?): the thin SVD, computed in double when f64 is true (results rounded to fp32).
Napi::Value SvdThin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Matrix m = get_dense(env, info[0], "m");
    bool f64 = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    return to_svd(env, f64 ? svd_thin_f64(m) : svd_thin(m));
  });
}

// randomizedSvd(m, rank, oversample, niter, seed, stream).
Napi::Value RandomizedSvd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Matrix m = get_dense(env, info[0], "m");
    RandomizedSvdOptions o;
    o.rank = get_int(env, info[1], "rank");
    o.oversample = get_int(env, info[2], "oversample");
    o.niter = static_cast<int>(get_int(env, info[3], "niter"));
    o.seed = get_u64(env, info[4], "seed");
    o.stream = get_u64(env, info[5], "stream");
    return to_svd(env, randomized_svd(backend_dense_operator(m), o));
  });
}

Napi::Value FactoredSvd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return to_svd(env, factored_svd(get_module(env, info[0], "module"))); });
}

// refactor(module, rank, targetScale, split) -> the module re-factored through its SVD.
Napi::Value Refactor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    LoraModule m = get_module(env, info[0], "module");
    std::string split = info[3].ToString().Utf8Value();
    if (split != "balanced" && split != "b_heavy") type_error(env, "split must be 'balanced' or 'b_heavy'");
    return to_module(env, refactor(factored_svd(m), get_int(env, info[1], "rank"),
                                   get_double(env, info[2], "targetScale"),
                                   split == "balanced" ? Split::kBalanced : Split::kBHeavy));
  });
}

Napi::Value InnerProduct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    return Napi::Number::New(env, factored_inner(get_module(env, info[0], "x"), get_module(env, info[1], "y")));
  });
}

Napi::Value ModuleSpectra(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Spectra s = module_spectra(get_module(env, info[0], "module"));
    Napi::Object o = Napi::Object::New(env);
    o.Set("sigma", to_f32(env, s.sigma.data(), s.sigma.size()));
    Napi::Float64Array energy = Napi::Float64Array::New(env, s.energy.size());
    for (size_t i = 0; i < s.energy.size(); i++) energy[i] = s.energy[i];
    o.Set("energy", energy);
    Napi::Object k_at = Napi::Object::New(env);
    const char* taus[] = {"0.5", "0.9", "0.95", "0.99"};  // kEnergyTaus as JS keys
    for (size_t t = 0; t < kEnergyTaus.size(); t++) k_at.Set(taus[t], Napi::Number::New(env, static_cast<double>(s.k_at[t])));
    o.Set("kAt", k_at);
    const std::pair<const char*, double> scalars[] = {
        {"fro", s.fro},       {"spec", s.spec},     {"nuc", s.nuc},         {"erank", s.erank},
        {"srank", s.srank},   {"normA", s.norm_a},  {"normB", s.norm_b},    {"balance", s.balance},
        {"maxabs", s.maxabs}, {"nonfinite", static_cast<double>(s.nonfinite)},
    };
    for (const auto& [name, value] : scalars) o.Set(name, Napi::Number::New(env, value));
    return o;
  });
}

// philox(seed, stream, offset, n, kind) -> Uint32Array ('u32') or Float32Array.
Napi::Value Philox(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    uint64_t seed = get_u64(env, info[0], "seed"), stream = get_u64(env, info[1], "stream");
    uint64_t offset = get_u64(env, info[2], "offset");
    int64_t n = get_int(env, info[3], "n");
    std::string kind = info[4].ToString().Utf8Value();
    if (kind == "u32") {
      Napi::Uint32Array a = Napi::Uint32Array::New(env, static_cast<size_t>(n));
      for (int64_t i = 0; i < n; i++) a[static_cast<size_t>(i)] = philox_u32(seed, stream, offset + static_cast<uint64_t>(i));
      return a;
    }
    if (kind != "uniform" && kind != "normal") type_error(env, "kind must be 'u32', 'uniform' or 'normal'");
    Napi::Float32Array a = Napi::Float32Array::New(env, static_cast<size_t>(n));
    if (kind == "uniform") philox_fill_uniform(seed, stream, offset, n, a.Data());
    else philox_fill_normal(seed, stream, offset, n, a.Data());
    return a;
  });
}

Napi::Value StreamId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) type_error(env, "purpose must be a string");
  return Napi::BigInt::New(env, stream_id(info[0].As<Napi::String>().Utf8Value()));
}

// dareMask(seed, module, tensor, input, n, density) -> Uint8Array: the mask a merge draws.
Napi::Value DareMask(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    uint64_t seed = get_u64(env, info[0], "seed");
    std::string module = info[1].ToString().Utf8Value(), tensor = info[2].ToString().Utf8Value();
    int64_t input = get_int(env, info[3], "input"), n = get_int(env, info[4], "n");
    double density = get_double(env, info[5], "density");
    std::vector<uint8_t> m = dare_mask(seed, dare_stream(module, tensor, input), n, density);
    Napi::Uint8Array a = Napi::Uint8Array::New(env, m.size());
    for (size_t i = 0; i < m.size(); i++) a[i] = m[i];
    return a;
  });
}

Napi::Value SetBlasThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    set_blas_threads(static_cast<int>(get_int(env, info[0], "threads")));
    return env.Undefined();
  });
}

Napi::Value BlasThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), blas_threads()); }

}  // namespace

void InitLinalg(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("qr", Napi::Function::New(env, Qr));
  exports.Set("svd", Napi::Function::New(env, SvdThin));
  exports.Set("randomizedSvd", Napi::Function::New(env, RandomizedSvd));
  exports.Set("factoredSvd", Napi::Function::New(env, FactoredSvd));
  exports.Set("refactor", Napi::Function::New(env, Refactor));
  exports.Set("innerProduct", Napi::Function::New(env, InnerProduct));
  exports.Set("spectra", Napi::Function::New(env, ModuleSpectra));
  exports.Set("philox", Napi::Function::New(env, Philox));
  exports.Set("streamId", Napi::Function::New(env, StreamId));
  exports.Set("dareMask", Napi::Function::New(env, DareMask));
  exports.Set("setBlasThreads", Napi::Function::New(env, SetBlasThreads));
  exports.Set("blasThreads", Napi::Function::New(env, BlasThreads));
  InitMerge(env, exports);
}

}  // namespace lowrank::addon
