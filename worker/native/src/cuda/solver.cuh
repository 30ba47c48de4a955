// cuSOLVER for the exact SVDs (svd.cu), loaded at run time as cuBLAS is (blas.cuh). Settings,
// read once (lrk_cuda_probe):
//   LOWRANK_CUDA_SVD          auto (default: cuSOLVER when it loads, else the CPU's LAPACK) |
//                             cusolver (required: the backend is unavailable without it) | cpu
//   LOWRANK_CUSOLVER_LIBRARY  the library (default libcusolver.so.12, then .11)
#pragma once
#include <string>

#include "common.cuh"
#include "solver_api.h"

namespace lowrank::cuda {

/** Reads the settings and loads cuSOLVER (no context yet); an error for a bad setting or a required cuSOLVER missing. */
lrk_status solver_init();
/** What runs the exact SVDs, for backendInfo(): "cuSOLVER 12.0.4 gesvd, fp64 (libcusolver.so.12)" or "cpu LAPACK (why)". */
std::string svd_description();
/** Whether the exact SVDs run on cuSOLVER (else the caller keeps LAPACK). */
bool solver_in_use();

struct Solver {
  cusolverDnHandle_t handle = nullptr;
  cusolverDnDgesvd_bufferSize_fn gesvd_buffer = nullptr;
  cusolverDnDgesvd_fn gesvd = nullptr;
};
/**
 * The thin SVD in double of M [rows, cols] (device fp32, row-major): U [rows, k], s [k],
 * Vt [k, cols] to host fp32, k = min(rows, cols), before the sign rule (svd.cu). Synchronous.
 */
lrk_status svd_f64_device(const float* m, int64_t rows, int64_t cols, float* u, float* s, float* vt);

/** The loaded functions and a handle (made at the first call: it needs a context); nullptr with the error recorded. */
const Solver* solver();

}  // namespace lowrank::cuda
