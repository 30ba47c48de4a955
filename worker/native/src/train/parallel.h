// A small persistent thread pool for the engine's row loops (norms, softmax, RoPE,
// cross-entropy). Workers block on a condition variable between calls instead of
// spinning, so they never compete with OpenBLAS's own threads for the cores (OpenMP's
// spin-waiting did, and doubled step times on 2 cores).
//
// Determinism: [0, n) is cut into one contiguous chunk per thread, and every index is
// computed by exactly one thread with no shared reduction, so results never depend on
// the thread count or on scheduling.
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
