// Randomized SVDs on the CUDA backend (merges, compressions, linalg.randomizedSvd): the
// dense operator's products run on the device (lrk_cuda_matrix_*: M uploaded once, each
// product moves only the thin [·, l] operand and result); the thin QRs and the small SVD
// stay on the host, as on the CPU. Installed once, when the CUDA backend is chosen.
#include "device_linalg.h"

#include <memory>
#include <string>

#include "lowrank/backend_ops.h"
#include "lowrank/error.h"
#include "lowrank/linalg.h"

namespace lowrank::addon {
namespace {

struct Fns {
  lrk_status (*create)(const float*, int64_t, int64_t, lrk_cuda_matrix**);
  lrk_status (*apply)(lrk_cuda_matrix*, int, const float*, int64_t, float*);
  void (*destroy)(lrk_cuda_matrix*);
  const char* (*last_error)();
};

void check(const Fns& f, lrk_status s) {
  if (s != LRK_OK)
    throw Error(s == LRK_INVALID_ARGUMENT ? "invalid_argument" : "device_error",
                std::string("CUDA dense operator: ") + (f.last_error ? f.last_error() : "unknown CUDA error"));
}

}  // namespace

bool install_device_linalg(void* (*symbol)(const char* name)) {
  Fns f{};
  f.create = reinterpret_cast<decltype(f.create)>(symbol("lrk_cuda_matrix_create"));
  f.apply = reinterpret_cast<decltype(f.apply)>(symbol("lrk_cuda_matrix_apply"));
  f.destroy = reinterpret_cast<decltype(f.destroy)>(symbol("lrk_cuda_matrix_destroy"));
  f.last_error = reinterpret_cast<decltype(f.last_error)>(symbol("lrk_cuda_last_error"));
  if (!f.create || !f.apply || !f.destroy) return false;  // an older library: the CPU operator stays
  set_dense_operator_factory([f](const Matrix& m) {
    lrk_cuda_matrix* h = nullptr;
    check(f, f.create(m.ptr(), m.rows, m.cols, &h));
    std::shared_ptr<lrk_cuda_matrix> mat(h, f.destroy);
    LinearOperator op;
    op.rows = m.rows;
    op.cols = m.cols;
    op.apply = [f, mat, rows = m.rows](const Matrix& x) {
      Matrix y(rows, x.cols);
      check(f, f.apply(mat.get(), 0, x.ptr(), x.cols, y.ptr()));
      return y;
    };
    op.apply_t = [f, mat, cols = m.cols](const Matrix& x) {
      Matrix y(cols, x.cols);
      check(f, f.apply(mat.get(), 1, x.ptr(), x.cols, y.ptr()));
      return y;
    };
    return op;
  });
  return true;
}

}  // namespace lowrank::addon
