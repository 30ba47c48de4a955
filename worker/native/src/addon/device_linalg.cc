// The SVDs of merges and compressions on the CUDA backend, installed once when it is chosen:
// - randomized (svd.algorithm: randomized, factorDense randomized, linalg.randomizedSvd):
//   the dense operator's products run on the device (lrk_cuda_matrix_*: M uploaded once,
//   each product moves only the thin [·, l] operand and result); the thin QRs and the small
//   SVD stay on the host, as on the CPU;
// - exact (svd_thin_f64: the default of merges, compressions, factorDense, linalg.svd f64):
//   cuSOLVER's gesvd in double (lrk_cuda_svd_f64) for matrices of kDeviceMinElements or more,
//   when the library has cuSOLVER in use; smaller ones stay on LAPACK;
// - the merges' dense stages (device_merge.cc).
// Device calls are serialised: merges run on libuv workers, and cuBLAS/cuSOLVER handles
// and the library's scratch are not for concurrent use.
#include "device_linalg.h"

#include "device_merge.h"

#include <memory>
#include <mutex>
#include <string>

#include "lowrank/backend_ops.h"
#include "lowrank/error.h"
#include "lowrank/linalg.h"

namespace lowrank::addon {

std::mutex& device_mutex() {
  static std::mutex m;
  return m;
}

void check_device(lrk_status s, const char* (*last_error)(), const char* what) {
  if (s != LRK_OK)
    throw Error(s == LRK_INVALID_ARGUMENT ? "invalid_argument" : "device_error",
                std::string(what) + ": " + (last_error ? last_error() : "unknown CUDA error"));
}

namespace {

struct Fns {
  lrk_status (*create)(const float*, int64_t, int64_t, lrk_cuda_matrix**);
  lrk_status (*apply)(lrk_cuda_matrix*, int, const float*, int64_t, float*);
  void (*destroy)(lrk_cuda_matrix*);
  const char* (*last_error)();
  int (*svd_info)(char*, size_t);
  lrk_status (*svd_f64)(const float*, int64_t, int64_t, float*, float*, float*);
};

void check(const Fns& f, lrk_status s) { check_device(s, f.last_error, "CUDA dense operator"); }

}  // namespace

bool install_device_linalg(void* (*symbol)(const char* name)) {
  Fns f{};
  f.create = reinterpret_cast<decltype(f.create)>(symbol("lrk_cuda_matrix_create"));
  f.apply = reinterpret_cast<decltype(f.apply)>(symbol("lrk_cuda_matrix_apply"));
  f.destroy = reinterpret_cast<decltype(f.destroy)>(symbol("lrk_cuda_matrix_destroy"));
  f.last_error = reinterpret_cast<decltype(f.last_error)>(symbol("lrk_cuda_last_error"));
  f.svd_info = reinterpret_cast<decltype(f.svd_info)>(symbol("lrk_cuda_svd_info"));
  f.svd_f64 = reinterpret_cast<decltype(f.svd_f64)>(symbol("lrk_cuda_svd_f64"));
  const bool solver = f.svd_info && f.svd_info(nullptr, 0) == 1;  // cuSOLVER in use
  if (solver && f.svd_f64) {
    set_svd_f64_provider([f](const Matrix& m, Svd* out) {
      if (m.rows * m.cols < kDeviceMinElements) return false;
      std::lock_guard<std::mutex> lock(device_mutex());
      check(f, f.svd_f64(m.ptr(), m.rows, m.cols, out->u.ptr(), out->s.data(), out->vt.ptr()));
      return true;
    });
  }
  install_device_merge(symbol, solver);
  if (!f.create || !f.apply || !f.destroy) return false;  // an older library: the CPU operator stays
  set_dense_operator_factory([f](const Matrix& m) {
    lrk_cuda_matrix* h = nullptr;
    std::lock_guard<std::mutex> lock(device_mutex());
    check(f, f.create(m.ptr(), m.rows, m.cols, &h));
    std::shared_ptr<lrk_cuda_matrix> mat(h, f.destroy);
    LinearOperator op;
    op.rows = m.rows;
    op.cols = m.cols;
    op.apply = [f, mat, rows = m.rows](const Matrix& x) {
      Matrix y(rows, x.cols);
      std::lock_guard<std::mutex> lock(device_mutex());
      check(f, f.apply(mat.get(), 0, x.ptr(), x.cols, y.ptr()));
      return y;
    };
    op.apply_t = [f, mat, cols = m.cols](const Matrix& x) {
      Matrix y(cols, x.cols);
      std::lock_guard<std::mutex> lock(device_mutex());
      check(f, f.apply(mat.get(), 1, x.ptr(), x.cols, y.ptr()));
      return y;
    };
    return op;
  });
  return true;
}

}  // namespace lowrank::addon
