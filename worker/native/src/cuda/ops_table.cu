// liblowrank_cuda.so's entry points: the ABI version, the device probe the addon calls
// before choosing this backend, and the table of ops.
#include <atomic>
#include <cstdio>
#include <cstring>

#include "blas.cuh"
#include "solver.cuh"
#include "common.cuh"
#include "cuda_ops.h"

namespace lowrank::cuda {

std::string& last_error_slot() {
  thread_local std::string msg;
  return msg;
}

namespace {
std::atomic<int64_t> g_bytes{0}, g_peak{0};
}

void device_bytes_changed(int64_t delta) {
  const int64_t now = g_bytes.fetch_add(delta) + delta;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void device_bytes(int64_t* current, int64_t* peak) {
  *current = g_bytes.load();
  *peak = g_peak.load();
}
void device_bytes_reset_peak() { g_peak.store(g_bytes.load()); }

}  // namespace lowrank::cuda

namespace {

void copy_out(char* dst, size_t len, const std::string& s) {
  if (!dst || len == 0) return;
  std::snprintf(dst, len, "%s", s.c_str());
}

}  // namespace

extern "C" const char* lrk_cuda_last_error(void) { return lowrank::cuda::last_error_slot().c_str(); }

extern "C" int lrk_cuda_abi(void) { return LRK_BACKEND_ABI; }

// A usable device: at least one, and device 0 of compute capability 8.0+ (the SASS this
// library carries is sm_80 and sm_90, plus compute_90 PTX for newer GPUs to JIT).
extern "C" int lrk_cuda_probe(char* device_name, size_t name_len, char* why, size_t why_len) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    copy_out(why, why_len, std::string("cudaGetDeviceCount: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
    return static_cast<int>(e);
  }
  if (count == 0) {
    copy_out(why, why_len, "no CUDA device is visible");
    return static_cast<int>(cudaErrorNoDevice);
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, 0);
  if (e != cudaSuccess) {
    copy_out(why, why_len, std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e));
    return static_cast<int>(e);
  }
  // The versions go with the device (METHODS §8.2: a version records its CUDA libraries).
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  copy_out(device_name, name_len,
           std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + "; driver CUDA " +
               ver(driver) + ", runtime " + ver(runtime) + ")");
  if (lowrank::cuda::blas_init() != LRK_OK || lowrank::cuda::solver_init() != LRK_OK) {
    copy_out(why, why_len, lowrank::cuda::last_error_slot());
    return static_cast<int>(cudaErrorNotSupported);
  }
  if (prop.major < 8) {
    copy_out(why, why_len, std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
                               std::to_string(prop.minor) + "; the CUDA backend needs 8.0 or newer");
    return static_cast<int>(cudaErrorNoKernelImageForDevice);
  }
  return 0;
}

// What runs the GEMMs (cuBLAS and its version, or the tiled kernel and why), for backendInfo().
extern "C" void lrk_cuda_gemm_info(char* out, size_t len) { copy_out(out, len, lowrank::cuda::gemm_description()); }

// Device bytes held by this library now and at their peak since the last reset (reset = 1 resets it after reading).
extern "C" void lrk_cuda_memory(int64_t* current, int64_t* peak, int reset) {
  lowrank::cuda::device_bytes(current, peak);
  if (reset) lowrank::cuda::device_bytes_reset_peak();
}

extern "C" const lrk_ops* lrk_cuda_ops(void) {
  static const lrk_ops table = {lrk_cuda_lora_forward, lrk_cuda_lora_backward,   lrk_cuda_adamw,
                                lrk_cuda_rmsnorm_forward, lrk_cuda_rope_apply,    lrk_cuda_swiglu_forward,
                                lrk_cuda_attention_forward, lrk_cuda_factor_sum, lrk_cuda_rmsnorm_backward, lrk_cuda_swiglu_backward, lrk_cuda_cross_entropy, lrk_cuda_dropout_mask, lrk_cuda_attention_backward, lrk_cuda_last_error};
  return &table;
}
