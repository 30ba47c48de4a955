// The slice of the cuSOLVER dense API the exact SVD uses (svd.cu), declared here because
// cuSOLVER is dlopen()ed (solver.cu), never linked, as cuBLAS is (blas_api.h). The values
// are cusolver_common.h's and the signatures cusolverDn.h's (CUDA 12 and 13); the CPU
// emulation's stand-in (test/cuda_emu/cusolver_emu.cc) includes this file too.
#pragma once

extern "C" {
typedef struct cusolverDnContext* cusolverDnHandle_t;
typedef enum {
  CUSOLVER_STATUS_SUCCESS = 0,
  CUSOLVER_STATUS_NOT_INITIALIZED = 1,
  CUSOLVER_STATUS_ALLOC_FAILED = 2,
  CUSOLVER_STATUS_INVALID_VALUE = 3,
  CUSOLVER_STATUS_ARCH_MISMATCH = 4,
  CUSOLVER_STATUS_EXECUTION_FAILED = 6,
  CUSOLVER_STATUS_INTERNAL_ERROR = 7,
  CUSOLVER_STATUS_NOT_SUPPORTED = 9,
} cusolverStatus_t;

typedef cusolverStatus_t (*cusolverDnCreate_fn)(cusolverDnHandle_t*);
typedef cusolverStatus_t (*cusolverGetProperty_fn)(int type, int* value);  // MAJOR 0, MINOR 1, PATCH 2
typedef cusolverStatus_t (*cusolverDnDgesvd_bufferSize_fn)(cusolverDnHandle_t, int m, int n, int* lwork);
// Column-major A [m, n], m >= n (cuSOLVER's gesvd takes no wide matrix): A = U diag(S) VT,
// jobu = jobvt = 'S': U [m, n] (ldu >= m), VT [n, n] (ldvt >= n); A is overwritten.
typedef cusolverStatus_t (*cusolverDnDgesvd_fn)(cusolverDnHandle_t, signed char jobu, signed char jobvt, int m, int n,
                                                double* A, int lda, double* S, double* U, int ldu, double* VT,
                                                int ldvt, double* work, int lwork, double* rwork, int* devInfo);
}
