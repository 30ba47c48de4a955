// JS bindings for safetensors: readSafetensors (zero-copy views over the file's mapping),
// writeSafetensors (atomic) and toFloat32. JS input mistakes are TypeErrors; file and
// OS problems are Errors with `.code` (invalid_file, not_found, io, invalid_request).
#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "lowrank/dtype.h"
#include "lowrank/safetensors.h"

namespace lowrank::addon {
namespace {

namespace st = lowrank::safetensors;
constexpr double kMaxSafeInteger = 9007199254740991.0;

struct JsView {
  napi_typedarray_type type;
  size_t element_size;  // of the JS array (C64 is two floats)
};

JsView js_view(DType t) {
  switch (t) {
    case DType::F32: return {napi_float32_array, 4};
    case DType::C64: return {napi_float32_array, 4};
    case DType::F64: return {napi_float64_array, 8};
    case DType::F16:
    case DType::BF16:
    case DType::U16: return {napi_uint16_array, 2};
    case DType::I16: return {napi_int16_array, 2};
    case DType::I32: return {napi_int32_array, 4};
    case DType::U32: return {napi_uint32_array, 4};
    case DType::I64: return {napi_bigint64_array, 8};
    case DType::U64: return {napi_biguint64_array, 8};
    case DType::I8: return {napi_int8_array, 1};
    default: return {napi_uint8_array, 1};  // U8, BOOL, F8_*
  }
}

const char* typed_array_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

std::string describe(const Napi::Value& v) {
  if (v.IsTypedArray()) return typed_array_name(v.As<Napi::TypedArray>().TypedArrayType());
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsArray()) return "an array";
  if (v.IsString()) return "a string";
  if (v.IsNumber()) return "a number";
  if (v.IsBoolean()) return "a boolean";
  return "an object";
}

Napi::Value make_view(Napi::Env env, napi_typedarray_type type, size_t length, Napi::ArrayBuffer buf, size_t offset) {
  napi_value out;
  NAPI_THROW_IF_FAILED(env, napi_create_typedarray(env, type, length, buf, offset, &out), Napi::Value());
  return Napi::Value(env, out);
}

// One external ArrayBuffer over the whole mapping; its finalizer drops the last
// reference (unmapping) once every view over it is garbage. Null when the runtime
// forbids external buffers (then every tensor is copied).
Napi::ArrayBuffer external_buffer(Napi::Env env, const std::shared_ptr<st::Mapping>& map) {
  auto* hint = new std::shared_ptr<st::Mapping>(map);
  napi_value out;
  napi_status s = napi_create_external_arraybuffer(
      env, map->data(), map->size(),
      [](napi_env, void*, void* h) { delete static_cast<std::shared_ptr<st::Mapping>*>(h); }, hint, &out);
  if (s != napi_ok) {
    delete hint;
    if (s == napi_no_external_buffers_allowed) return Napi::ArrayBuffer();
    NAPI_THROW_IF_FAILED(env, s, Napi::ArrayBuffer());
  }
  return Napi::ArrayBuffer(env, out);
}

// An own data property even for keys like "__proto__" (plain Set would call its setter).
void define(Napi::Object obj, const std::string& key, Napi::Value value) {
  obj.DefineProperty(Napi::PropertyDescriptor::Value(key, value, napi_default_jsproperty));
}

Napi::Value ReadSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw Napi::TypeError::New(env, "readSafetensors(path): path must be a string, got " + describe(info[0]));
  }
  const std::string path = info[0].As<Napi::String>();
  return guarded(env, [&]() -> Napi::Value {
    st::File file = st::File::open(path);
    const st::Header& h = file.header();
    Napi::Object metadata = Napi::Object::New(env);
    if (h.metadata) {
      for (const auto& [k, v] : *h.metadata) define(metadata, k, Napi::String::New(env, v));
    }
    Napi::Object tensors = Napi::Object::New(env);
    Napi::ArrayBuffer whole;
    bool tried_whole = false;
    for (const auto& t : h.tensors) {
      Napi::Array shape = Napi::Array::New(env, t.shape.size());
      for (size_t i = 0; i < t.shape.size(); ++i) {
        if (static_cast<double>(t.shape[i]) > kMaxSafeInteger) {
          throw Error("invalid_file", path + ": tensor \"" + t.name + "\": dimension " + std::to_string(t.shape[i]) +
                                          " is too large for JavaScript");
        }
        shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(t.shape[i])));
      }
      const JsView view = js_view(t.dtype);
      const size_t nbytes = static_cast<size_t>(t.end - t.begin);
      const size_t length = nbytes / view.element_size;
      const size_t offset = h.data_start + t.begin;
      Napi::Value data;
      if (offset % view.element_size == 0) {
        if (!tried_whole) {
          whole = external_buffer(env, file.mapping());
          tried_whole = true;
        }
      }
      if (offset % view.element_size == 0 && !whole.IsEmpty()) {
        data = make_view(env, view.type, length, whole, offset);
      } else {  // unaligned for this element type: copy
        Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, nbytes);
        if (nbytes) std::memcpy(copy.Data(), file.data(t), nbytes);
        data = make_view(env, view.type, length, copy, 0);
      }
      Napi::Object entry = Napi::Object::New(env);
      entry.Set("dtype", std::string(dtype_name(t.dtype)));
      entry.Set("shape", shape);
      entry.Set("data", data);
      define(tensors, t.name, entry);
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("metadata", metadata);
    result.Set("tensors", tensors);
    return result;
  });
}

DType dtype_arg(Napi::Env env, const Napi::Value& v, const std::string& where, bool writable) {
  if (!v.IsString()) throw Napi::TypeError::New(env, where + ": dtype must be a string, got " + describe(v));
  const std::string name = v.As<Napi::String>();
  auto t = parse_dtype(name);
  if (writable && !(t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::I8)) {
    throw Napi::TypeError::New(env, where + ": dtype must be one of F32, F16, BF16, I8, got \"" + name + "\"");
  }
  if (!t || !dtype_converts_to_f32(*t)) {
    throw Napi::TypeError::New(env, where + ": dtype must be one of F32, F16, BF16, F64, I8, U8, got \"" + name + "\"");
  }
  return *t;
}

// The typed array each dtype's raw data comes in.
napi_typedarray_type raw_type(DType t) { return js_view(t).type; }

Napi::Value ToFloat32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const DType t = dtype_arg(env, info[0], "toFloat32(dtype, data)", false);
  const napi_typedarray_type want = raw_type(t);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != want) {
    throw Napi::TypeError::New(env, std::string("toFloat32: data for dtype ") + std::string(dtype_name(t)) + " must be a " +
                                        typed_array_name(want) + ", got " + describe(info[1]));
  }
  Napi::TypedArray in = info[1].As<Napi::TypedArray>();
  const size_t n = in.ElementLength();
  Napi::Float32Array out = Napi::Float32Array::New(env, n);
  const auto* src = static_cast<const uint8_t*>(in.ArrayBuffer().Data()) + in.ByteOffset();
  return guarded(env, [&]() -> Napi::Value {
    if (n) to_float32(t, src, out.Data(), n);
    return out;
  });
}

std::vector<std::string> own_keys(Napi::Env env, Napi::Object obj) {
  napi_value names;
  NAPI_THROW_IF_FAILED(env,
                       napi_get_all_property_names(env, obj, napi_key_own_only,
                                                   static_cast<napi_key_filter>(napi_key_enumerable | napi_key_skip_symbols),
                                                   napi_key_numbers_to_strings, &names),
                       {});
  Napi::Array arr(env, names);
  std::vector<std::string> keys;
  for (uint32_t i = 0; i < arr.Length(); ++i) keys.push_back(arr.Get(i).As<Napi::String>());
  return keys;
}

bool is_plain_object(const Napi::Value& v) {
  return v.IsObject() && !v.IsArray() && !v.IsTypedArray() && !v.IsFunction();
}

Napi::Value WriteSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "writeSafetensors(path, tensors, metadata?)";
  if (!info[0].IsString()) throw Napi::TypeError::New(env, std::string(usage) + ": path must be a string, got " + describe(info[0]));
  if (!is_plain_object(info[1])) {
    throw Napi::TypeError::New(env, std::string(usage) + ": tensors must be an object of {dtype, shape, data}, got " + describe(info[1]));
  }
  const std::string path = info[0].As<Napi::String>();
  Napi::Object obj = info[1].As<Napi::Object>();
  std::vector<TensorView> views;
  std::deque<std::vector<uint16_t>> converted;  // F16/BF16 given as Float32Array
  for (const std::string& name : own_keys(env, obj)) {
    const std::string where = "writeSafetensors: tensor \"" + name + "\"";
    Napi::Value entry = obj.Get(name);
    if (!is_plain_object(entry)) throw Napi::TypeError::New(env, where + " must be an object {dtype, shape, data}, got " + describe(entry));
    Napi::Object e = entry.As<Napi::Object>();
    TensorView v;
    v.name = name;
    v.dtype = dtype_arg(env, e.Get("dtype"), where, true);
    Napi::Value shape = e.Get("shape");
    if (!shape.IsArray()) throw Napi::TypeError::New(env, where + ": shape must be an array of non-negative integers, got " + describe(shape));
    Napi::Array sa = shape.As<Napi::Array>();
    for (uint32_t i = 0; i < sa.Length(); ++i) {
      Napi::Value d = sa.Get(i);
      const double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
      if (!(x >= 0 && x <= kMaxSafeInteger && std::floor(x) == x)) {
        throw Napi::TypeError::New(env, where + ": shape[" + std::to_string(i) + "] must be a non-negative integer, got " +
                                            (d.IsNumber() ? d.ToString().Utf8Value() : describe(d)));
      }
      v.shape.push_back(static_cast<uint64_t>(x));
    }
    Napi::Value data = e.Get("data");
    const napi_typedarray_type want = raw_type(v.dtype);
    const bool f32_source = (v.dtype == DType::F16 || v.dtype == DType::BF16) && data.IsTypedArray() &&
                            data.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
    if (!data.IsTypedArray() || (data.As<Napi::TypedArray>().TypedArrayType() != want && !f32_source)) {
      throw Napi::TypeError::New(env, where + ": data for dtype " + std::string(dtype_name(v.dtype)) + " must be a " +
                                          typed_array_name(want) + (want == napi_uint16_array ? " (raw bits) or a Float32Array" : "") +
                                          ", got " + describe(data));
    }
    Napi::TypedArray ta = data.As<Napi::TypedArray>();
    const size_t n = ta.ElementLength();
    auto numel = checked_numel(v.shape);
    if (!numel || *numel != n) {
      std::string s = "[";
      for (size_t i = 0; i < v.shape.size(); ++i) s += (i ? "," : "") + std::to_string(v.shape[i]);
      throw Napi::TypeError::New(env, where + ": shape " + s + "] needs " + (numel ? std::to_string(*numel) : "too many") +
                                          " elements but data has " + std::to_string(n));
    }
    const auto* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    if (f32_source) {
      auto& out = converted.emplace_back(n);
      std::vector<float> tmp(n);  // the source may be unaligned only in theory; copy keeps it simple
      if (n) std::memcpy(tmp.data(), src, n * 4);
      if (v.dtype == DType::F16) f32_to_f16(tmp.data(), out.data(), n);
      else f32_to_bf16(tmp.data(), out.data(), n);
      v.data = out.data();
      v.nbytes = n * 2;
    } else {
      v.data = src;
      v.nbytes = ta.ByteLength();
    }
    views.push_back(std::move(v));
  }
  std::optional<st::Metadata> metadata;
  if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
    if (!is_plain_object(info[2])) throw Napi::TypeError::New(env, std::string(usage) + ": metadata must be an object of strings, got " + describe(info[2]));
    Napi::Object m = info[2].As<Napi::Object>();
    metadata.emplace();
    for (const std::string& k : own_keys(env, m)) {
      Napi::Value val = m.Get(k);
      if (!val.IsString()) throw Napi::TypeError::New(env, std::string(usage) + ": metadata \"" + k + "\" must be a string, got " + describe(val));
      (*metadata)[k] = val.As<Napi::String>().Utf8Value();
    }
  }
  return guarded(env, [&]() -> Napi::Value {
    st::write_file(path, std::move(views), metadata);
    return env.Undefined();
  });
}

}  // namespace

void InitSafetensors(Napi::Env env, Napi::Object exports) {
  exports.Set("readSafetensors", Napi::Function::New(env, ReadSafetensors, "readSafetensors"));
  exports.Set("writeSafetensors", Napi::Function::New(env, WriteSafetensors, "writeSafetensors"));
  exports.Set("toFloat32", Napi::Function::New(env, ToFloat32, "toFloat32"));
}

}  // namespace lowrank::addon
