// The emulated runtime of cuda_runtime.h here: launches, barriers, host "device" memory.
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "cuda_runtime.h"

namespace lrk_emu {
namespace {
thread_local dim3 t_thread, t_block;
dim3 g_block_dim, g_grid_dim;
std::barrier<>* g_barrier = nullptr;
std::vector<unsigned char> g_shared;
}  // namespace

const dim3& thread_idx() { return t_thread; }
const dim3& block_idx() { return t_block; }
const dim3& block_dim() { return g_block_dim; }
const dim3& grid_dim() { return g_grid_dim; }
void syncthreads() { g_barrier->arrive_and_wait(); }
void* dynamic_shared() { return g_shared.data(); }

// One host thread per CUDA thread of a block, reused for every block in order; the barrier
// that __syncthreads uses also closes each block.
void launch(dim3 grid, dim3 block, size_t shmem, const std::function<void()>& body) {
  g_block_dim = block;
  g_grid_dim = grid;
  g_shared.assign(shmem, 0);
  const unsigned n = block.x * block.y * block.z;
  std::barrier<> bar(n);
  g_barrier = &bar;
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < n; t++) {
    threads.emplace_back([&, t] {
      t_thread = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
      for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
          for (unsigned x = 0; x < grid.x; x++) {
            t_block = dim3(x, y, z);
            body();
            bar.arrive_and_wait();
          }
    });
  }
  for (std::thread& th : threads) th.join();
  g_barrier = nullptr;
}
}  // namespace lrk_emu

struct lrk_emu_event {
  std::chrono::steady_clock::time_point t;
};

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }
const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "%s", "CPU emulation of the CUDA kernels (not a GPU)");
  p->major = 9;
  p->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  *free_bytes = *total = size_t{1} << 34;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;  // no driver: the emulation
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new lrk_emu_event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e) {
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
