// Conversions between JS values and the core's types for the linalg and merge bindings.
// The TS wrappers validate first; these checks are the last line and throw TypeError.
#pragma once
#include <napi.h>

#include <cstring>
#include <string>

#include "lowrank/adapter.h"
#include "lowrank/linalg.h"

namespace lowrank::addon {

[[noreturn]] inline void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

inline int64_t get_int(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsNumber()) type_error(env, what + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d))) {
    type_error(env, what + " must be a non-negative integer");
  }
  return static_cast<int64_t>(d);
}

inline double get_double(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsNumber()) type_error(env, what + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

/** A seed or stream: a BigInt (any u64) or a safe non-negative integer. */
inline uint64_t get_u64(Napi::Env env, Napi::Value v, const std::string& what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) type_error(env, what + " must fit in 64 unsigned bits");
    return x;
  }
  return static_cast<uint64_t>(get_int(env, v, what));
}

/** A Float32Array of exactly rows · cols entries, copied into a Matrix. */
inline Matrix get_matrix(Napi::Env env, Napi::Value v, int64_t rows, int64_t cols, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    type_error(env, what + " must be a Float32Array");
  }
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (static_cast<int64_t>(a.ElementLength()) != rows * cols) {
    type_error(env, what + " has " + std::to_string(a.ElementLength()) + " entries, expected " +
                        std::to_string(rows) + " x " + std::to_string(cols));
  }
  Matrix m(rows, cols);
  if (rows * cols > 0) std::memcpy(m.ptr(), a.Data(), static_cast<size_t>(rows * cols) * sizeof(float));
  return m;
}

/** { rows, cols, data: Float32Array } -> Matrix. */
inline Matrix get_dense(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsObject()) type_error(env, what + " must be { rows, cols, data }");
  Napi::Object o = v.As<Napi::Object>();
  int64_t rows = get_int(env, o.Get("rows"), what + ".rows");
  int64_t cols = get_int(env, o.Get("cols"), what + ".cols");
  return get_matrix(env, o.Get("data"), rows, cols, what + ".data");
}

/** { r, in, out, A, B, scale } -> LoraModule. */
inline LoraModule get_module(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsObject()) type_error(env, what + " must be { r, in, out, A, B, scale }");
  Napi::Object o = v.As<Napi::Object>();
  LoraModule m;
  m.r = get_int(env, o.Get("r"), what + ".r");
  m.in = get_int(env, o.Get("in"), what + ".in");
  m.out = get_int(env, o.Get("out"), what + ".out");
  m.scale = get_double(env, o.Get("scale"), what + ".scale");
  m.a = get_matrix(env, o.Get("A"), m.r, m.in, what + ".A");
  m.b = get_matrix(env, o.Get("B"), m.out, m.r, what + ".B");
  return m;
}

inline Napi::Float32Array to_f32(Napi::Env env, const float* data, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n > 0) std::memcpy(a.Data(), data, n * sizeof(float));
  return a;
}

inline Napi::Object to_dense(Napi::Env env, const Matrix& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rows", Napi::Number::New(env, static_cast<double>(m.rows)));
  o.Set("cols", Napi::Number::New(env, static_cast<double>(m.cols)));
  o.Set("data", to_f32(env, m.ptr(), m.data.size()));
  return o;
}

inline Napi::Object to_module(Napi::Env env, const LoraModule& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("r", Napi::Number::New(env, static_cast<double>(m.r)));
  o.Set("in", Napi::Number::New(env, static_cast<double>(m.in)));
  o.Set("out", Napi::Number::New(env, static_cast<double>(m.out)));
  o.Set("A", to_f32(env, m.a.ptr(), m.a.data.size()));
  o.Set("B", to_f32(env, m.b.ptr(), m.b.data.size()));
  o.Set("scale", Napi::Number::New(env, m.scale));
  return o;
}

inline Napi::Object to_svd(Napi::Env env, const Svd& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("u", to_dense(env, s.u));
  o.Set("s", to_f32(env, s.s.data(), s.s.size()));
  o.Set("vt", to_dense(env, s.vt));
  return o;
}

}  // namespace lowrank::addon
