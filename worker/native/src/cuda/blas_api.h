// The slice of the cuBLAS API the GEMM uses, declared here because cuBLAS is dlopen()ed
// (blas.cu), never linked: the library still loads where only the driver is installed,
// and the build needs no cuBLAS headers. The values are cublas_api.h's (CUDA 12 and 13);
// cudaDataType comes from library_types.h in a CUDA build, and is declared for the CPU
// emulation, whose stand-in cuBLAS (test/cuda_emu/cublas_emu.cc) includes this file too.
#pragma once

#ifdef LRK_CUDA_EMULATION
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
typedef cudaDataType_t cudaDataType;
#else
#include <library_types.h>
#endif

extern "C" {
typedef struct cublasContext* cublasHandle_t;
typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_PEDANTIC_MATH = 2, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
typedef enum {
  CUBLAS_COMPUTE_32F = 68,
  CUBLAS_COMPUTE_32F_PEDANTIC = 69,
  CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
} cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

// The exported symbols (cublas_v2.h maps cublasCreate to cublasCreate_v2 and so on).
typedef cublasStatus_t (*cublasCreate_fn)(cublasHandle_t*);
typedef cublasStatus_t (*cublasGetVersion_fn)(cublasHandle_t, int*);
typedef cublasStatus_t (*cublasSetMathMode_fn)(cublasHandle_t, cublasMath_t);
typedef cublasStatus_t (*cublasGemmEx_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n, int k,
                                          const void* alpha, const void* A, cudaDataType Atype, int lda,
                                          const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                                          cudaDataType Ctype, int ldc, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo);
}
