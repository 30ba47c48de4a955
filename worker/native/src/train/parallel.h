// A small persistent thread pool for the engine's row loops (norms, softmax, RoPE,
// cross-entropy). Workers block on a condition variable between calls instead of
// spinning, so they never compete with OpenBLAS's own threads for the cores (OpenMP's
// spin-waiting did, and doubled step times on 2 cores).
//
// Determinism: [0, n) is cut into one contiguous chunk per thread, and every index is
// computed by exactly one thread with no shared reduction, so row loops never depend on
// the thread count or on scheduling (pgemm's blocks do depend on the count, see below).
#pragma once
#include <cstdint>
#include <functional>

namespace lowrank::train {

/** Runs fn(begin, end) over a partition of [0, n); returns when every chunk is done. */
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

/** Threads parallel_for uses (default: the machine's cores); n >= 1. */
void set_num_threads(int n);
int num_threads();

}  // namespace lowrank::train

namespace lowrank::train {

/**
 * gemm (lowrank/linalg.h) cut into one block of C per pool thread, along the larger of
 * M and N, each block a single-threaded BLAS call (see BlasSingleThread). The blocks
 * depend only on the thread count, so results repeat exactly for a given count (another
 * count can change the last bits: BLAS rounds edge tiles differently).
 */
void pgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

/**
 * While alive, OpenBLAS runs single-threaded: the engine parallelises with its own pool,
 * because OpenBLAS's yield-spinning thread server collapses when the cores are shared
 * (a 135M-parameter step went from 3 s single-threaded to 6-10 s on 2 busy cores).
 * Restores the previous thread count.
 */
class BlasSingleThread {
 public:
  BlasSingleThread();
  ~BlasSingleThread();
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int previous_;
};

}  // namespace lowrank::train
