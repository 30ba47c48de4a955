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
/** The first cuBLAS failure since the last call, or "" (blas.cu; checked by LRK_CUDA_SYNC). */
std::string take_blas_error();
/** Device bytes this library holds: every allocation goes through these (ops_table.cu). */
void device_bytes_changed(int64_t delta);
void device_bytes(int64_t* current, int64_t* peak);
void device_bytes_reset_peak();

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

// The last launch's error, then the kernel's completion (errors of a kernel surface here),
// then any cuBLAS call's since the last sync.
#define LRK_CUDA_SYNC(what)                                                                           \
  do {                                                                                                \
    LRK_CUDA_TRY(cudaGetLastError());                                                                 \
    if (lrk_status s_ = ::lowrank::cuda::check(cudaDeviceSynchronize(), what)) return s_;             \
    if (std::string e_ = ::lowrank::cuda::take_blas_error(); !e_.empty())                             \
      return ::lowrank::cuda::fail(LRK_DEVICE_ERROR, std::string(what) + ": " + e_);                  \
  } while (0)

// cudaMalloc / cudaFree counted in device_bytes (what the benchmark reports as memory held).
inline cudaError_t counted_malloc(void** p, size_t bytes) {
  const cudaError_t e = cudaMalloc(p, bytes);
  if (e == cudaSuccess) device_bytes_changed(static_cast<int64_t>(bytes));
  return e;
}
inline void counted_free(void* p, size_t bytes) {
  if (!p) return;
  cudaFree(p);
  device_bytes_changed(-static_cast<int64_t>(bytes));
}

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { counted_free(ptr_, bytes_); }
  /** Allocates `bytes` (at least 1) and, when `host` is given, copies it in. */
  lrk_status alloc(size_t bytes, const void* host = nullptr) {
    counted_free(ptr_, bytes_);
    ptr_ = nullptr;
    bytes_ = 0;
    LRK_CUDA_TRY(counted_malloc(&ptr_, bytes ? bytes : 1));
    bytes_ = bytes ? bytes : 1;
    if (host && bytes) LRK_CUDA_TRY(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice));
    return LRK_OK;
  }
  /**
   * Grow-only (scratch: the GEMM's converted operands, thin products): keeps the buffer when
   * it holds `bytes` already. cudaFree waits for the device, so growing is safe with work queued.
   */
  lrk_status reserve(size_t bytes) { return ptr_ && bytes <= bytes_ ? LRK_OK : alloc(bytes); }
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
  size_t bytes_ = 0;
};

// A device buffer used grow-only through reserve().
using Scratch = DeviceBuffer;

inline size_t f32_bytes(int64_t n) { return static_cast<size_t>(n) * sizeof(float); }

}  // namespace lowrank::cuda
