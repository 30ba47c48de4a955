// What the dlopen()ed CUDA libraries (cuBLAS in blas.cu, cuSOLVER in solver.cu) share: a
// setting read from the environment against its allowed values, and the first library of
// a list that loads.
#pragma once
#include <dlfcn.h>

#include <cstdlib>
#include <initializer_list>
#include <string>

#include "common.cuh"

namespace lowrank::cuda {

/** `name` from the environment (or `def`), checked against `allowed`; a bad value fails naming the setting. */
inline lrk_status setting(const char* name, const char* def, std::initializer_list<const char*> allowed,
                          std::string* out) {
  const char* v = std::getenv(name);
  *out = v && *v ? v : def;
  for (const char* a : allowed)
    if (*out == a) return LRK_OK;
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
  return fail(LRK_INVALID_ARGUMENT, std::string(name) + " must be one of " + list + ", got \"" + *out + "\"");
}

/**
 * dlopen()s the library `env` names, else the first of `defaults` that loads; nullptr with
 * every dlerror() in `tried` when none does. `chosen` gets the name that loaded.
 */
inline void* open_first(const char* env, std::initializer_list<const char*> defaults, std::string* chosen,
                        std::string* tried) {
  const char* v = std::getenv(env);
  auto attempt = [&](const char* name) -> void* {
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      *chosen = name;
      return lib;
    }
    const char* e = dlerror();
    *tried += std::string(tried->empty() ? "" : "; ") + (e ? e : name);
    return nullptr;
  };
  if (v && *v) return attempt(v);
  for (const char* name : defaults)
    if (void* lib = attempt(name)) return lib;
  return nullptr;
}

/** "major.minor.patch" from a library's *GetProperty (MAJOR 0, MINOR 1, PATCH 2: no context needed), or "". */
inline std::string library_version(void* lib, const char* get_property) {
  auto prop = reinterpret_cast<int (*)(int, int*)>(dlsym(lib, get_property));
  int v[3] = {0, 0, 0};
  if (!prop || prop(0, &v[0]) != 0 || prop(1, &v[1]) != 0 || prop(2, &v[2]) != 0) return "";
  return std::to_string(v[0]) + "." + std::to_string(v[1]) + "." + std::to_string(v[2]);
}

}  // namespace lowrank::cuda
