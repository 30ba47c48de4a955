// CPU emulation of the slice of the CUDA runtime and device language that src/cuda uses,
// so its kernels compile with g++ and run on machines without a GPU (make emu). Each CUDA
// thread of a block is a fiber on the launching host thread; blocks run one after another,
// so a __shared__ array (a function-local static here) is one block's; __syncthreads hands
// control back to the scheduler, which resumes every thread before the next round. Device
// memory is host memory. It checks the kernels' indexing, tiling, masking and reductions;
// it says nothing about speed, the memory model or the GPU's floating-point contraction.
#pragma once
#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>

#define LRK_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace lrk_emu {
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void syncthreads();
void* dynamic_shared();
void launch(dim3 grid, dim3 block, size_t shmem, const std::function<void()>& body);

template <typename K>
struct Launcher {
  dim3 grid, block;
  size_t shmem;
  K kernel;
  template <typename... A>
  void operator()(A... args) const {
    launch(grid, block, shmem, [&] { kernel(args...); });
  }
};
template <typename K>
Launcher<K> launcher(dim3 grid, dim3 block, size_t shmem, K kernel) {
  return Launcher<K>{grid, block, shmem, kernel};
}
}  // namespace lrk_emu

#define threadIdx (::lrk_emu::thread_idx())
#define blockIdx (::lrk_emu::block_idx())
#define blockDim (::lrk_emu::block_dim())
#define gridDim (::lrk_emu::grid_dim())
#define __syncthreads() ::lrk_emu::syncthreads()

// The round-to-nearest intrinsics are the plain operations (built with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }

// Integer atomics: the fibers of a block share one host thread and switch only at
// __syncthreads, so a read-modify-write is atomic as written.
template <typename T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

typedef int cudaError_t;
enum : int { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorNoDevice = 100, cudaErrorNoKernelImageForDevice = 209, cudaErrorNotSupported = 801 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};
typedef struct lrk_emu_event* cudaEvent_t;

cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaGetLastError();
cudaError_t cudaDeviceSynchronize();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventRecord(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaEventDestroy(cudaEvent_t e);
