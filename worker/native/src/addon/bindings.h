// One Init hook per binding file; addon.cc calls them all.
#pragma once
#include <napi.h>

#include "lowrank/error.h"

namespace lowrank::addon {

void InitSafetensors(Napi::Env env, Napi::Object exports);
void InitLinalg(Napi::Env env, Napi::Object exports);
void InitDelta(Napi::Env env, Napi::Object exports);  // delta_binding.cc
void InitTrain(Napi::Env env, Napi::Object exports);
void InitGenerate(Napi::Env env, Napi::Object exports);  // generate_binding.cc (ICM-LoRA CVAE)
void InitBackend(Napi::Env env, Napi::Object exports);  // backend_binding.cc (CPU/CUDA ops)

/** Runs fn, turning lowrank::Error into a JS Error carrying `.code`. */
template <typename F>
auto guarded(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const lowrank::Error& e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", Napi::String::New(env, e.code()));
    throw err;
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "out of memory in the native core");
  }
}

}  // namespace lowrank::addon
