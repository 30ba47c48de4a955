// A stand-in cuBLAS for the CPU emulation (libcublas_emu.so; LOWRANK_CUBLAS_LIBRARY points
// the emulated library at it): cublasGemmEx as the cuBLAS documentation defines it —
// column-major C = α op(A) op(B) + β C, fp32 or bf16 inputs, fp32 output and accumulation
// in k order — with its argument checks (CUBLAS_STATUS_INVALID_VALUE for a leading
// dimension below the stored rows). It checks our row-major-to-column-major mapping, the
// operand conversions and k-chunking of blas.cu; it says nothing about cuBLAS's speed or
// its own summation order (METHODS §8.1 tolerances cover that).
#include <cstdint>
#include <cstring>

#include "../../src/cuda/blas_api.h"

namespace {

float load(const void* p, cudaDataType t, int64_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  const uint32_t u = static_cast<uint32_t>(static_cast<const uint16_t*>(p)[i]) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

struct cublasContext {
  int math = 0;
};

extern "C" {

__attribute__((visibility("default"))) cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = m;
  return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) cublasStatus_t cublasGetProperty(int type, int* value) {
  const int v[3] = {0, 0, 0};  // the emulation: version 0.0.0
  if (type < 0 || type > 2) return CUBLAS_STATUS_INVALID_VALUE;
  *value = v[type];
  return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) cublasStatus_t cublasGemmEx(
    cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* alpha,
    const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt, int ldb, const void* beta, void* C,
    cudaDataType ct, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  // op(A) is m×k: A stored m×k (N) or k×m (T), column-major, lda ≥ its rows; B likewise k×n.
  if (lda < (ta == CUBLAS_OP_N ? (m > 1 ? m : 1) : (k > 1 ? k : 1))) return CUBLAS_STATUS_INVALID_VALUE;
  if (ldb < (tb == CUBLAS_OP_N ? (k > 1 ? k : 1) : (n > 1 ? n : 1))) return CUBLAS_STATUS_INVALID_VALUE;
  if (ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
  if (at != bt || (at != CUDA_R_32F && at != CUDA_R_16BF) || ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC && compute != CUBLAS_COMPUTE_32F_FAST_TF32)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (compute == CUBLAS_COMPUTE_32F_FAST_TF32 && at != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  float* c = static_cast<float*>(C);
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++) {
      float acc = 0.0f;
      for (int p = 0; p < k; p++) {
        const float x = load(A, at, ta == CUBLAS_OP_N ? i + int64_t{p} * lda : p + int64_t{i} * lda);
        const float y = load(B, bt, tb == CUBLAS_OP_N ? p + int64_t{j} * ldb : j + int64_t{p} * ldb);
        acc += x * y;
      }
      float& out = c[i + int64_t{j} * ldc];
      out = b == 0.0f ? a * acc : a * acc + b * out;  // β = 0: C is not read (may hold NaN)
    }
  return CUBLAS_STATUS_SUCCESS;
}
}
