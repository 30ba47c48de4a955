// Backend resolution (see backend_select.h): the driver first (the most basic reason a
// GPU path cannot run), then the library, its ABI version, then a device.
#include "backend_select.h"
#include "device_linalg.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <climits>

#include <cstdlib>
#include <mutex>

#include "lowrank/error.h"

namespace lowrank::addon {

namespace {

BackendInfo g_info;
const lrk_ops* g_cuda = nullptr;
void* g_lib = nullptr;
std::once_flag g_once;
std::string g_env_error;

// build/Release/lowrank_native.node -> build/cuda/liblowrank_cuda.so
std::string default_library() {
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&default_library), &self) == 0 || !self.dli_fname) return "liblowrank_cuda.so";
  std::string path = self.dli_fname;
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string lib = dir + "/../cuda/liblowrank_cuda.so";
  char* real = realpath(lib.c_str(), nullptr);
  if (!real) return lib;
  std::string out = real;
  std::free(real);
  return out;
}

std::string dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown dlopen error";
}

// Fills g_cuda and the device, or returns why not.
std::string try_cuda(BackendInfo* info) {
  if (!dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    return "the NVIDIA driver library libcuda.so.1 cannot be loaded (no driver on this machine?): " + dl_error();
  }
  const char* env = std::getenv("LOWRANK_CUDA_LIBRARY");
  info->library = env && *env ? env : default_library();
  struct stat st;
  if (::stat(info->library.c_str(), &st) != 0) {
    return info->library + " does not exist: build it with scripts/build-cuda (or set LOWRANK_CUDA_LIBRARY)";
  }
  void* lib = dlopen(info->library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) return "cannot load " + info->library + ": " + dl_error();
  auto abi = reinterpret_cast<int (*)()>(dlsym(lib, "lrk_cuda_abi"));
  auto probe = reinterpret_cast<int (*)(char*, size_t, char*, size_t)>(dlsym(lib, "lrk_cuda_probe"));
  auto table = reinterpret_cast<const lrk_ops* (*)()>(dlsym(lib, "lrk_cuda_ops"));
  if (!abi || !probe || !table) return info->library + " lacks lrk_cuda_abi/lrk_cuda_probe/lrk_cuda_ops: rebuild it";
  if (abi() != LRK_BACKEND_ABI) {
    return info->library + " has ABI " + std::to_string(abi()) + ", the addon " + std::to_string(LRK_BACKEND_ABI) +
           ": rebuild both (scripts/build-native)";
  }
  char name[256] = {0}, why[512] = {0};
  if (probe(name, sizeof name, why, sizeof why) != 0) return std::string("no usable CUDA device: ") + why;
  info->device = name;
  g_cuda = table();
  g_lib = lib;
  return "";
}

void resolve() {
  const char* env = std::getenv("LOWRANK_BACKEND");
  g_info.requested = env && *env ? env : "auto";
  if (g_info.requested != "cpu" && g_info.requested != "cuda" && g_info.requested != "auto") {
    g_env_error = "LOWRANK_BACKEND must be cpu, cuda or auto, got \"" + g_info.requested + "\"";
    return;
  }
  g_info.backend = "cpu";
  if (g_info.requested == "cpu") return;
  g_info.reason = try_cuda(&g_info);
  g_info.cuda_available = g_cuda != nullptr;
  if (g_cuda) {
    g_info.backend = "cuda";
    // Inside call_once: the symbols come straight from the handle (cuda_symbol would re-enter it).
    install_device_linalg([](const char* name) { return dlsym(g_lib, name); });
  }
}

}  // namespace

const BackendInfo& backend_info() {
  std::call_once(g_once, resolve);
  if (!g_env_error.empty()) throw Error("invalid_argument", g_env_error);
  return g_info;
}

const lrk_ops* cuda_ops() {
  backend_info();
  return g_cuda;
}

void* cuda_symbol(const char* name) {
  backend_info();
  return g_lib ? dlsym(g_lib, name) : nullptr;
}

const lrk_ops& ops_for(const std::string& which) {
  const BackendInfo& info = backend_info();
  if (which == "cpu") return *lrk_cpu_ops();
  if (which == "cuda" || (which == "active" && info.requested == "cuda")) {
    if (!g_cuda) throw Error("backend_unavailable", "the CUDA backend is unavailable: " + info.reason);
    return *g_cuda;
  }
  if (which == "active") return g_cuda ? *g_cuda : *lrk_cpu_ops();
  throw Error("invalid_argument", "backend must be \"cpu\", \"cuda\" or \"active\", got \"" + which + "\"");
}

}  // namespace lowrank::addon
