// N-API entry point: each binding file registers its functions through an Init* hook.
#include <napi.h>

#include "bindings.h"
#include "lowrank/version.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("version", Napi::String::New(env, lowrank::version()));
  exports.Set("blas", Napi::String::New(env, lowrank::blas_info()));
  lowrank::addon::InitSafetensors(env, exports);
  lowrank::addon::InitLinalg(env, exports);
  lowrank::addon::InitDelta(env, exports);
  lowrank::addon::InitTrain(env, exports);
  lowrank::addon::InitGenerate(env, exports);
  lowrank::addon::InitBackend(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lowrank_native, Init)
