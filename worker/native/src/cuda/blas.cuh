// cuBLAS for the GEMMs of gemm.cuh (blas.cu): loaded at run time, used when it loads,
// else the tiled kernel runs. Settings, read once (lrk_cuda_probe):
//   LOWRANK_CUDA_GEMM     auto (default: cuBLAS when it loads) | cublas (required) | tiled
//   LOWRANK_CUDA_MATMUL   fp32 (default: fp32 inputs and accumulation, as the CPU) |
//                         tf32 (tensor cores on fp32 inputs, as torch's allow_tf32) |
//                         bf16 (the frozen bf16 weights' GEMMs take their fp32 operand
//                         rounded to bf16, fp32 accumulation: PyTorch's bf16 training)
//   LOWRANK_CUBLAS_LIBRARY  the library (default libcublas.so.13, then .12)
#pragma once
#include <string>

#include "gemm.cuh"

namespace lowrank::cuda {

enum class Matmul { fp32, tf32, bf16 };

/** Reads the settings and loads cuBLAS (no context yet); an error for a bad setting or a required cuBLAS missing. */
lrk_status blas_init();
/** What runs the GEMMs, for backendInfo(): "cuBLAS 13.0.2 (libcublas.so.13), matmul fp32" or "tiled (why)". */
std::string gemm_description();
/** Sets the matmul precision of later GEMMs (the device engine's per-job choice); cuBLAS only. */
void blas_set_matmul(Matmul m);
/** The matmul precision later GEMMs use. */
Matmul blas_matmul();
/** Whether the GEMMs run on cuBLAS (else the tiled kernel, always fp32). */
bool blas_in_use();

/** Sets the matmul for a scope (the device engine's calls) and restores the previous one. */
class MatmulScope {
 public:
  explicit MatmulScope(Matmul m) : prev_(blas_matmul()) { blas_set_matmul(m); }
  ~MatmulScope() { blas_set_matmul(prev_); }
  MatmulScope(const MatmulScope&) = delete;
  MatmulScope& operator=(const MatmulScope&) = delete;

 private:
  Matmul prev_;
};

/**
 * C = α op(A) op(B) + β C (row-major, gemm.cuh's pair) through cuBLAS, on the default
 * stream; false when cuBLAS is not in use (the caller runs the tiled kernel). A failing
 * cuBLAS call is kept and reported by the next LRK_CUDA_SYNC (take_blas_error).
 */
template <typename TB>
bool blas_gemm(int64_t m, int64_t n, const GemmPair<TB>& p, float beta, float* c, int64_t ldc);

/** The first cuBLAS failure since the last call, or "" (and clears it). */
std::string take_blas_error();

}  // namespace lowrank::cuda
