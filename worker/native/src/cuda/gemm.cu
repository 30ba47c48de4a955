// The tiled GEMM of gemm.cuh: 64×64 output tiles, 16-deep k slices staged in shared
// memory, a 4×4 register block per thread (256 threads). Edges are masked, so any shape
// works; the kernel reads op(X) through the transposes without copying.
#include "blas.cuh"
#include "gemm.cuh"
#include "widen.cuh"

namespace lowrank::cuda {

namespace {

constexpr int kTile = 64, kDepth = 16, kThreads = 256, kMicro = 4;

// Accumulates α op(A) op(B) for this block's tile into acc.
template <typename TB>
__device__ void accumulate(const GemmPair<TB>& p, int64_t m, int64_t n, float (&acc)[kMicro][kMicro],
                           float (*sa)[kTile + 1], float (*sb)[kTile + 1]) {
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile, col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int64_t k0 = 0; k0 < p.k; k0 += kDepth) {
    // Stage op(A)[row0.., k0..] as sa[kk][i] and op(B)[k0.., col0..] as sb[kk][j].
    for (int e = threadIdx.x; e < kTile * kDepth; e += kThreads) {
      const int i = e % kTile, kk = e / kTile;
      const int64_t gi = row0 + i, gk = k0 + kk, gj = col0 + i;
      float av = 0.0f, bv = 0.0f;
      if (gi < m && gk < p.k) av = p.trans_a ? p.a[gk * p.lda + gi] : p.a[gi * p.lda + gk];
      if (gj < n && gk < p.k) bv = widen(p.trans_b ? p.b[gj * p.ldb + gk] : p.b[gk * p.ldb + gj]);
      sa[kk][i] = av;
      sb[kk][i] = bv;
    }
    __syncthreads();
    for (int kk = 0; kk < kDepth; kk++) {
      float ra[kMicro], rb[kMicro];
      for (int u = 0; u < kMicro; u++) {
        ra[u] = sa[kk][ty * kMicro + u];
        rb[u] = sb[kk][tx * kMicro + u];
      }
      for (int u = 0; u < kMicro; u++)
        for (int w = 0; w < kMicro; w++) acc[u][w] += p.alpha * ra[u] * rb[w];
    }
    __syncthreads();
  }
}

template <typename TB>
__global__ void __launch_bounds__(kThreads) gemm2_kernel(int64_t m, int64_t n, GemmPair<TB> p1, GemmPair<float> p2,
                                                         float beta, float* c, int64_t ldc) {
  __shared__ float sa[kDepth][kTile + 1];
  __shared__ float sb[kDepth][kTile + 1];
  float acc[kMicro][kMicro] = {};
  accumulate(p1, m, n, acc, sa, sb);
  if (p2.k > 0) accumulate(p2, m, n, acc, sa, sb);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int u = 0; u < kMicro; u++)
    for (int w = 0; w < kMicro; w++) {
      const int64_t i = static_cast<int64_t>(blockIdx.y) * kTile + ty * kMicro + u;
      const int64_t j = static_cast<int64_t>(blockIdx.x) * kTile + tx * kMicro + w;
      if (i < m && j < n) c[i * ldc + j] = beta == 0.0f ? acc[u][w] : acc[u][w] + beta * c[i * ldc + j];
    }
}

}  // namespace

template <typename TB>
void gemm2(int64_t m, int64_t n, const GemmPair<TB>& p1, const GemmPair<float>& p2, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  // cuBLAS when it is in use: the pairs as two calls, the second accumulating (β = 1).
  if (blas_gemm(m, n, p1, beta, c, ldc)) {
    if (p2.k > 0 && !blas_gemm(m, n, p2, 1.0f, c, ldc)) gemm2<TB>(m, n, GemmPair<TB>{}, p2, 1.0f, c, ldc);
    return;
  }
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile), static_cast<unsigned>((m + kTile - 1) / kTile));
  LRK_LAUNCH(gemm2_kernel<TB>, grid, kThreads, 0)(m, n, p1, p2, beta, c, ldc);
}

template void gemm2<float>(int64_t, int64_t, const GemmPair<float>&, const GemmPair<float>&, float, float*, int64_t);
template void gemm2<__nv_bfloat16>(int64_t, int64_t, const GemmPair<__nv_bfloat16>&, const GemmPair<float>&, float,
                                   float*, int64_t);

}  // namespace lowrank::cuda
