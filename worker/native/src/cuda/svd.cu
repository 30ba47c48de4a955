// The exact thin SVD of the merges and compressions (the core's svd_thin_f64, METHODS §7 P5)
// on cuSOLVER, in double as on the CPU: M [rows, cols] fp32 (row-major, host) goes up once,
// is widened to fp64 on the device, and U, s, Vt come back rounded to fp32 (the sign rule
// is the caller's, as for LAPACK). cuSOLVER's gesvd takes column-major A [m, n] with m >= n:
// a wide M (cols >= rows) is already the column-major Mᵀ, so M = (U_A S VT_A)ᵀ gives
// U = VT_A and Vt = U_A as stored, with no transpose; a tall M is transposed on the way in
// and its factors on the way out.
#include <climits>
#include <cstdio>
#include <string>

#include "cuda_ops.h"
#include "solver.cuh"

using namespace lowrank::cuda;

namespace {

// dst row-major [rows, cols], converted: (r, c) = src[r·cols + c], or src[c·rows + r]
// (src column-major [rows, cols]) when `transpose`.
template <typename From, typename To>
__global__ void cast_kernel(const From* src, To* dst, int64_t rows, int64_t cols, int transpose) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  dst[i] = static_cast<To>(src[transpose ? c * rows + r : i]);
}

template <typename From, typename To>
void cast(const From* src, To* dst, int64_t rows, int64_t cols, bool transpose) {
  const int64_t n = rows * cols;
  auto kernel = cast_kernel<From, To>;
  if (n > 0) LRK_LAUNCH(kernel, static_cast<unsigned>((n + 255) / 256), 256, 0)(src, dst, rows, cols, transpose ? 1 : 0);
}

// A device fp64 [rows, cols] back to host fp32 through `stage` (device fp32 scratch).
lrk_status download(const double* dev, int64_t rows, int64_t cols, bool transpose, DeviceBuffer& stage, float* host) {
  if (lrk_status s = stage.reserve(f32_bytes(rows * cols))) return s;
  cast<double, float>(dev, stage.as<float>(), rows, cols, transpose);
  LRK_CUDA_SYNC("svd_f64 narrowing");
  return stage.to_host(host, f32_bytes(rows * cols));
}

}  // namespace

extern "C" LRK_API int lrk_cuda_svd_info(char* out, size_t len) {
  const std::string d = svd_description();
  if (out && len) std::snprintf(out, len, "%s", d.c_str());
  return solver_in_use() ? 1 : 0;
}

namespace lowrank::cuda {

lrk_status svd_f64_device(const float* m, int64_t rows, int64_t cols, float* u, float* s, float* vt) {
  if (rows > INT_MAX || cols > INT_MAX || rows * cols > INT_MAX)
    return fail(LRK_INVALID_ARGUMENT, "svd_f64: cuSOLVER's int sizes: rows·cols must be < 2^31");
  const Solver* sv = solver();
  if (!sv) return LRK_DEVICE_ERROR;
  const bool wide = cols >= rows;
  const int64_t ma = wide ? cols : rows, na = wide ? rows : cols;  // column-major A [ma, na], ma >= na
  DeviceBuffer a, sing, ua, vta, work, rwork, info, stage;
  if (lrk_status st = a.alloc(sizeof(double) * static_cast<size_t>(ma * na))) return st;
  // A's column-major buffer, read row-major, is [na, ma]: M itself when wide, Mᵀ (from M) when tall.
  cast<float, double>(m, a.as<double>(), na, ma, !wide);
  int lwork = 0;
  if (cusolverStatus_t e = sv->gesvd_buffer(sv->handle, static_cast<int>(ma), static_cast<int>(na), &lwork))
    return fail(LRK_DEVICE_ERROR, "cusolverDnDgesvd_bufferSize failed with status " + std::to_string(e));
  if (lrk_status st = sing.alloc(sizeof(double) * static_cast<size_t>(na))) return st;
  if (lrk_status st = ua.alloc(sizeof(double) * static_cast<size_t>(ma * na))) return st;
  if (lrk_status st = vta.alloc(sizeof(double) * static_cast<size_t>(na * na))) return st;
  if (lrk_status st = work.alloc(sizeof(double) * static_cast<size_t>(lwork > 0 ? lwork : 1))) return st;
  if (lrk_status st = rwork.alloc(sizeof(double) * static_cast<size_t>(na))) return st;
  if (lrk_status st = info.alloc(sizeof(int))) return st;
  const int ima = static_cast<int>(ma), ina = static_cast<int>(na);
  if (cusolverStatus_t e = sv->gesvd(sv->handle, 'S', 'S', ima, ina, a.as<double>(), ima, sing.as<double>(),
                                     ua.as<double>(), ima, vta.as<double>(), ina, work.as<double>(), lwork,
                                     rwork.as<double>(), info.as<int>()))
    return fail(LRK_DEVICE_ERROR, "cusolverDnDgesvd failed with status " + std::to_string(e));
  LRK_CUDA_SYNC("svd_f64 gesvd");
  int dev_info = 0;
  if (lrk_status st = info.to_host(&dev_info, sizeof dev_info)) return st;
  if (dev_info != 0)
    return fail(LRK_DEVICE_ERROR, "cusolverDnDgesvd on [" + std::to_string(rows) + ", " + std::to_string(cols) + "]: " +
                                      (dev_info > 0 ? std::to_string(dev_info) + " superdiagonals did not converge"
                                                    : "parameter " + std::to_string(-dev_info) + " is wrong"));
  // wide: U [rows, rows] = VT_A as stored, Vt [rows, cols] = U_A as stored; tall: both transposed.
  if (lrk_status st = download(sing.as<double>(), 1, na, false, stage, s)) return st;
  if (wide) {
    if (lrk_status st = download(vta.as<double>(), rows, rows, false, stage, u)) return st;
    return download(ua.as<double>(), rows, cols, false, stage, vt);
  }
  if (lrk_status st = download(ua.as<double>(), rows, cols, true, stage, u)) return st;
  return download(vta.as<double>(), cols, cols, true, stage, vt);
}

}  // namespace lowrank::cuda

extern "C" LRK_API lrk_status lrk_cuda_svd_f64(const float* m, int64_t rows, int64_t cols, float* u, float* s,
                                               float* vt) {
  if (!m || !u || !s || !vt || rows < 1 || cols < 1)
    return fail(LRK_INVALID_ARGUMENT, "svd_f64: m, u, s, vt and rows, cols >= 1");
  if (rows * cols > INT_MAX) return fail(LRK_INVALID_ARGUMENT, "svd_f64: cuSOLVER's int sizes: rows·cols must be < 2^31");
  DeviceBuffer in;
  if (lrk_status st = in.alloc(f32_bytes(rows * cols), m)) return st;
  return svd_f64_device(in.as<float>(), rows, cols, u, s, vt);
}
