// The GEMM the CUDA ops share (METHODS §7 P1), row-major like cblas:
//   C [m, n] = α1 op(A1) op(B1) + α2 op(A2) op(B2) + β C
// op(X) = X or Xᵀ per operand pair. The second pair (k2 > 0) accumulates into the same
// registers: the fused LoRA forward y = x Wᵀ + s·h Bᵀ and backward dx = dy W + s·g A run as
// one kernel, so the adapter adds no pass over y/dx. B1 may be bf16 (frozen weights), widened
// to fp32 on load; all accumulation is fp32 in a fixed k order (deterministic, no atomics).
#pragma once
#include <cuda_bf16.h>

#include "common.cuh"

namespace lowrank::cuda {

template <typename TB>
struct GemmPair {
  bool trans_a = false, trans_b = false;
  int64_t k = 0;
  float alpha = 1.0f;
  const float* a = nullptr;
  int64_t lda = 0;
  const TB* b = nullptr;
  int64_t ldb = 0;
};

/** Launches on the default stream; errors surface at the caller's LRK_CUDA_SYNC. */
template <typename TB>
void gemm2(int64_t m, int64_t n, const GemmPair<TB>& p1, const GemmPair<float>& p2, float beta, float* c, int64_t ldc);

inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm2<float>(m, n, GemmPair<float>{ta, tb, k, alpha, a, lda, b, ldb}, GemmPair<float>{}, beta, c, ldc);
}

}  // namespace lowrank::cuda
