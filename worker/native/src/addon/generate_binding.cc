// N-API bindings of the ICM-LoRA generator (src/generate/cvae.h). Parameters and AdamW
// moments live in JS as 8 Float32Arrays each (kCvaeParamNames order); training writes
// them back in place. worker/src/native/cvae.ts validates first.
#include <napi.h>

#include <cstring>
#include <string>

#include "../generate/cvae.h"
#include "bindings.h"
#include "napi_convert.h"

namespace lowrank::addon {
namespace {

using generate::CvaeDims;
using generate::CvaeParams;

CvaeDims get_dims(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) type_error(env, "dims must be { input, cond, hidden, latent }");
  Napi::Object o = v.As<Napi::Object>();
  CvaeDims d;
  d.input = get_int(env, o.Get("input"), "dims.input");
  d.cond = get_int(env, o.Get("cond"), "dims.cond");
  d.hidden = get_int(env, o.Get("hidden"), "dims.hidden");
  d.latent = get_int(env, o.Get("latent"), "dims.latent");
  return d;
}

Napi::Float32Array get_f32(Napi::Env env, Napi::Value v, int64_t n, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(env, what + " must be a Float32Array");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (static_cast<int64_t>(a.ElementLength()) != n)
    type_error(env, what + " has " + std::to_string(a.ElementLength()) + " entries, expected " + std::to_string(n));
  return a;
}

CvaeParams get_params(Napi::Env env, const CvaeDims& d, Napi::Value v, const std::string& what) {
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 8) type_error(env, what + " must be an array of 8 Float32Arrays");
  Napi::Array arr = v.As<Napi::Array>();
  CvaeParams p;
  for (uint32_t i = 0; i < 8; i++) {
    Napi::Float32Array a = get_f32(env, arr.Get(i), generate::cvae_param_size(d, static_cast<int>(i)),
                                   what + "[" + generate::kCvaeParamNames[i] + "]");
    p.at(static_cast<int>(i))->assign(a.Data(), a.Data() + a.ElementLength());
  }
  return p;
}

void put_params(Napi::Value v, CvaeParams& p) {
  Napi::Array arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < 8; i++) {
    Napi::Float32Array a = arr.Get(i).As<Napi::Float32Array>();
    std::memcpy(a.Data(), p.at(static_cast<int>(i))->data(), a.ElementLength() * sizeof(float));
  }
}

Napi::Array to_array(Napi::Env env, CvaeParams& p) {
  Napi::Array arr = Napi::Array::New(env, 8);
  for (uint32_t i = 0; i < 8; i++) {
    std::vector<float>& v = *p.at(static_cast<int>(i));
    arr.Set(i, to_f32(env, v.data(), v.size()));
  }
  return arr;
}

Napi::Object loss_object(Napi::Env env, const generate::CvaeLoss& l) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("mse", l.mse);
  o.Set("kl", l.kl);
  o.Set("total", l.total);
  return o;
}

Napi::Value CvaeInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    CvaeDims d = get_dims(env, info[0]);
    CvaeParams p = generate::cvae_init(d, get_u64(env, info[1], "seed"));
    return to_array(env, p);
  });
}

// (dims, params, n, x, c, eps, beta) -> { mse, kl, total, grads }
Napi::Value CvaeForwardBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    CvaeDims d = get_dims(env, info[0]);
    CvaeParams p = get_params(env, d, info[1], "params");
    const int64_t n = get_int(env, info[2], "n");
    Napi::Float32Array x = get_f32(env, info[3], n * d.input, "x");
    Napi::Float32Array c = get_f32(env, info[4], n * d.cond, "c");
    Napi::Float32Array eps = get_f32(env, info[5], n * d.latent, "eps");
    CvaeParams g;
    generate::CvaeLoss l =
        generate::cvae_forward_backward(d, p, n, x.Data(), c.Data(), eps.Data(), get_double(env, info[6], "beta"), &g);
    Napi::Object o = loss_object(env, l);
    o.Set("grads", to_array(env, g));
    return o;
  });
}

// (dims, { params, m, v, step }, n, x, c, options) -> { losses, step }; params, m, v updated in place.
Napi::Value CvaeTrain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    CvaeDims d = get_dims(env, info[0]);
    if (!info[1].IsObject()) type_error(env, "state must be { params, m, v, step }");
    Napi::Object st = info[1].As<Napi::Object>();
    CvaeParams p = get_params(env, d, st.Get("params"), "state.params");
    generate::AdamWState s;
    s.m = get_params(env, d, st.Get("m"), "state.m");
    s.v = get_params(env, d, st.Get("v"), "state.v");
    s.step = get_int(env, st.Get("step"), "state.step");
    const int64_t n = get_int(env, info[2], "n");
    Napi::Float32Array x = get_f32(env, info[3], n * d.input, "x");
    Napi::Float32Array c = get_f32(env, info[4], n * d.cond, "c");
    if (!info[5].IsObject()) type_error(env, "options must be an object");
    Napi::Object o = info[5].As<Napi::Object>();
    generate::AdamWOptions opt;
    opt.lr = get_double(env, o.Get("lr"), "options.lr");
    opt.beta1 = get_double(env, o.Get("beta1"), "options.beta1");
    opt.beta2 = get_double(env, o.Get("beta2"), "options.beta2");
    opt.eps = get_double(env, o.Get("eps"), "options.eps");
    opt.weight_decay = get_double(env, o.Get("weightDecay"), "options.weightDecay");
    std::vector<generate::CvaeLoss> losses = generate::cvae_train(
        d, &p, &s, n, x.Data(), c.Data(), get_double(env, o.Get("beta"), "options.beta"), opt,
        get_int(env, o.Get("totalSteps"), "options.totalSteps"), get_int(env, o.Get("steps"), "options.steps"),
        get_u64(env, o.Get("seed"), "options.seed"));
    put_params(st.Get("params"), p);
    put_params(st.Get("m"), s.m);
    put_params(st.Get("v"), s.v);
    st.Set("step", Napi::Number::New(env, static_cast<double>(s.step)));
    Napi::Array arr = Napi::Array::New(env, losses.size());
    for (size_t i = 0; i < losses.size(); i++) arr.Set(static_cast<uint32_t>(i), loss_object(env, losses[i]));
    Napi::Object out = Napi::Object::New(env);
    out.Set("losses", arr);
    out.Set("step", Napi::Number::New(env, static_cast<double>(s.step)));
    return out;
  });
}

// (dims, params, n, x, c) -> { mu, logvar }
Napi::Value CvaeEncode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    CvaeDims d = get_dims(env, info[0]);
    CvaeParams p = get_params(env, d, info[1], "params");
    const int64_t n = get_int(env, info[2], "n");
    Napi::Float32Array x = get_f32(env, info[3], n * d.input, "x");
    Napi::Float32Array c = get_f32(env, info[4], n * d.cond, "c");
    std::vector<float> mu(static_cast<size_t>(n * d.latent)), lv(mu.size());
    generate::cvae_encode(d, p, n, x.Data(), c.Data(), mu.data(), lv.data());
    Napi::Object o = Napi::Object::New(env);
    o.Set("mu", to_f32(env, mu.data(), mu.size()));
    o.Set("logvar", to_f32(env, lv.data(), lv.size()));
    return o;
  });
}

// (dims, params, n, z, c) -> x̂
Napi::Value CvaeDecode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    CvaeDims d = get_dims(env, info[0]);
    CvaeParams p = get_params(env, d, info[1], "params");
    const int64_t n = get_int(env, info[2], "n");
    Napi::Float32Array z = get_f32(env, info[3], n * d.latent, "z");
    Napi::Float32Array c = get_f32(env, info[4], n * d.cond, "c");
    std::vector<float> out(static_cast<size_t>(n * d.input));
    generate::cvae_decode(d, p, n, z.Data(), c.Data(), out.data());
    return to_f32(env, out.data(), out.size());
  });
}

}  // namespace

void InitGenerate(Napi::Env env, Napi::Object exports) {
  exports.Set("cvaeInit", Napi::Function::New(env, CvaeInit));
  exports.Set("cvaeForwardBackward", Napi::Function::New(env, CvaeForwardBackward));
  exports.Set("cvaeTrain", Napi::Function::New(env, CvaeTrain));
  exports.Set("cvaeEncode", Napi::Function::New(env, CvaeEncode));
  exports.Set("cvaeDecode", Napi::Function::New(env, CvaeDecode));
}

}  // namespace lowrank::addon
