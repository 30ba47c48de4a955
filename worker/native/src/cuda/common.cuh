// Shared by the CUDA ops: the thread-local error message, a status-returning CUDA check,
// and a device buffer that frees itself. The ops take host buffers (backend_ops.h), so
// each call stages its inputs through DeviceBuffer and copies the results back.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "lowrank/backend_ops.h"

// Kernel launches and dynamic shared memory go through these two macros so that the
// kernels also compile as plain C++ for the CPU emulation the tests run on machines
// without a GPU (worker/native/test/cuda_emu: each CUDA thread a host thread).
#ifdef LRK_CUDA_EMULATION
#define LRK_LAUNCH(kernel, grid, block, shmem) ::lrk_emu::launcher(grid, block, shmem, kernel)
#define LRK_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::lrk_emu::dynamic_shared())
#else
#define LRK_LAUNCH(kernel, grid, block, shmem) kernel<<<grid, block, shmem>>>
#define LRK_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

namespace lowrank::cuda {

std::string& last_error_slot();

inline lrk_status fail(lrk_status s, const std::string& msg) {
  last_error_slot() = msg;
  return s;
}

inline lrk_status check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return LRK_OK;
  return fail(LRK_DEVICE_ERROR, std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// Evaluates a CUDA call; on failure records the message and returns from the function.
#define LRK_CUDA_TRY(call)                                         \
  do {                                                             \
    if (lrk_status s_ = ::lowrank::cuda::check((call), #call)) return s_; \
  } while (0)

// The last launch's error, then the kernel's completion (errors of a kernel surface here).
#define LRK_CUDA_SYNC(what)                                         \
  do {                                                              \
    LRK_CUDA_TRY(cudaGetLastError());                               \
    if (lrk_status s_ = ::lowrank::cuda::check(cudaDeviceSynchronize(), what)) return s_; \
  } while (0)

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  /** Allocates `bytes` (at least 1) and, when `host` is given, copies it in. */
  lrk_status alloc(size_t bytes, const void* host = nullptr) {
    LRK_CUDA_TRY(cudaMalloc(&ptr_, bytes ? bytes : 1));
    if (host && bytes) LRK_CUDA_TRY(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice));
    return LRK_OK;
  }
  lrk_status to_host(void* host, size_t bytes) const {
    if (bytes) LRK_CUDA_TRY(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost));
    return LRK_OK;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

inline size_t f32_bytes(int64_t n) { return static_cast<size_t>(n) * sizeof(float); }

}  // namespace lowrank::cuda
