// The emulated runtime of cuda_runtime.h here: launches, barriers, host "device" memory.
//
// Each CUDA thread of a block is a fiber (ucontext), all on the launching host thread:
// a scheduler resumes them in turn, and __syncthreads switches back to it, so one round
// of the scheduler takes every thread of the block to its next barrier. Blocks run one
// after another. Host threads per CUDA thread with a std::barrier did the same with an
// OS context switch per thread and barrier, which took minutes for a training step and
// loaded a 2-core machine past 100.
#include <ucontext.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda_runtime.h"

namespace lrk_emu {
namespace {
dim3 g_thread, g_block, g_block_dim, g_grid_dim;
std::vector<unsigned char> g_shared;

// Kernels keep small arrays on their stack; the pages are only touched when used.
constexpr size_t kStack = size_t{1} << 20;
struct Fiber {
  ucontext_t ctx;
  void* stack = nullptr;
  bool done = false;
};
ucontext_t g_scheduler;
std::vector<Fiber> g_fibers;
size_t g_current = 0;
const std::function<void()>* g_body = nullptr;

void fiber_main() {
  (*g_body)();
  g_fibers[g_current].done = true;  // returning resumes the scheduler (uc_link)
}
}  // namespace

const dim3& thread_idx() { return g_thread; }
const dim3& block_idx() { return g_block; }
const dim3& block_dim() { return g_block_dim; }
const dim3& grid_dim() { return g_grid_dim; }
void syncthreads() { swapcontext(&g_fibers[g_current].ctx, &g_scheduler); }
void* dynamic_shared() { return g_shared.data(); }

void launch(dim3 grid, dim3 block, size_t shmem, const std::function<void()>& body) {
  g_block_dim = block;
  g_grid_dim = grid;
  g_shared.assign(shmem, 0);
  g_body = &body;
  const size_t n = size_t{block.x} * block.y * block.z;
  while (g_fibers.size() < n) {
    g_fibers.emplace_back();
    g_fibers.back().stack = std::malloc(kStack);
    if (!g_fibers.back().stack) std::abort();
  }
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        g_block = dim3(x, y, z);
        for (size_t t = 0; t < n; t++) {
          Fiber& f = g_fibers[t];
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack;
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = &g_scheduler;
          f.done = false;
          makecontext(&f.ctx, fiber_main, 0);
        }
        // Round after round: every thread runs to its next __syncthreads or to its end.
        for (bool running = true; running;) {
          running = false;
          for (size_t t = 0; t < n; t++) {
            if (g_fibers[t].done) continue;
            g_current = t;
            g_thread = dim3(static_cast<unsigned>(t % block.x), static_cast<unsigned>((t / block.x) % block.y),
                            static_cast<unsigned>(t / (size_t{block.x} * block.y)));
            swapcontext(&g_scheduler, &g_fibers[t].ctx);
            running = running || !g_fibers[t].done;
          }
        }
      }
  g_body = nullptr;
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
