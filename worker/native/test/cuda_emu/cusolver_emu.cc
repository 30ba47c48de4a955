// A stand-in cuSOLVER for the CPU emulation (libcusolver_emu.so; LOWRANK_CUSOLVER_LIBRARY
// points the emulated library at it): cusolverDnDgesvd as the cuSOLVER documentation
// defines it — column-major A [m, n] with m >= n only (CUSOLVER_STATUS_INVALID_VALUE
// otherwise, as cuSOLVER), jobu = jobvt = 'S', the leading-dimension checks, a workspace of
// the size bufferSize gave, devInfo — computed by LAPACK's dgesvd. It checks svd.cu's
// row-major-to-column-major mapping (both the wide and the tall branch) and its
// conversions; it says nothing about cuSOLVER's speed or its own rounding.
#include <lapacke.h>

#include <algorithm>
#include <vector>

#include "../../src/cuda/solver_api.h"

struct cusolverDnContext {
  int unused = 0;
};

#define EXPORT __attribute__((visibility("default")))

extern "C" {

EXPORT cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* h) {
  *h = new cusolverDnContext;
  return CUSOLVER_STATUS_SUCCESS;
}

EXPORT cusolverStatus_t cusolverGetProperty(int type, int* value) {
  if (type < 0 || type > 2) return CUSOLVER_STATUS_INVALID_VALUE;
  *value = 0;  // the emulation: version 0.0.0
  return CUSOLVER_STATUS_SUCCESS;
}

EXPORT cusolverStatus_t cusolverDnDgesvd_bufferSize(cusolverDnHandle_t h, int m, int n, int* lwork) {
  if (!h) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (m < n || n < 0) return CUSOLVER_STATUS_INVALID_VALUE;
  *lwork = 5 * m + n;  // any size: the call checks it was honoured
  return CUSOLVER_STATUS_SUCCESS;
}

EXPORT cusolverStatus_t cusolverDnDgesvd(cusolverDnHandle_t h, signed char jobu, signed char jobvt, int m, int n,
                                         double* A, int lda, double* S, double* U, int ldu, double* VT, int ldvt,
                                         double* work, int lwork, double* rwork, int* info) {
  if (!h) return CUSOLVER_STATUS_NOT_INITIALIZED;
  if (m < n || n < 1 || jobu != 'S' || jobvt != 'S' || lda < m || ldu < m || ldvt < n || !work || lwork < 5 * m + n ||
      !info)
    return CUSOLVER_STATUS_INVALID_VALUE;
  std::vector<double> superb(static_cast<size_t>(std::max(1, n - 1)));
  *info = static_cast<int>(LAPACKE_dgesvd(LAPACK_COL_MAJOR, 'S', 'S', m, n, A, lda, S, U, ldu, VT, ldvt, superb.data()));
  if (rwork) std::copy(superb.begin(), superb.begin() + (n - 1), rwork);
  return CUSOLVER_STATUS_SUCCESS;
}
}
