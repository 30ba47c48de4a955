// The SVDs of merges and compressions on the CUDA backend, installed once when it is chosen:
// - randomized (svd.algorithm: randomized, factorDense randomized, linalg.randomizedSvd):
//   the dense operator's products run on the device (lrk_cuda_matrix_*: M uploaded once,
//   each product moves only the thin [·, l] operand and result); the thin QRs and the small
//   SVD stay on the host, as on the CPU;
// - exact (svd_thin_f64: the default of merges, compressions, factorDense, linalg.svd f64):
//   cuSOLVER's gesvd in double (lrk_cuda_svd_f64) for matrices of kSvdMinElements or more,
//   when the library has cuSOLVER in use; smaller ones stay on LAPACK;
// - the dense stage of PEFT's svd-type merges (ties_svd, dare_*_svd, magnitude_prune_svd,
//   merge.cc): the deltas made, pruned and combined on the device (lrk_cuda_stack_*), and
//   their exact SVD taken there when cuSOLVER is in use (else the combined matrix comes
//   back for the CPU's SVD), for modules of kSvdMinElements or more.
// Device calls are serialised: merges run on libuv workers, and cuBLAS/cuSOLVER handles
// and the library's scratch are not for concurrent use.
#include "device_linalg.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lowrank/backend_ops.h"
#include "lowrank/error.h"
#include "lowrank/adapter.h"
#include "lowrank/linalg.h"
#include "lowrank/merge_ops.h"

namespace lowrank::addon {
namespace {

// Below this many elements (256 × 256) the upload and launches cost more than LAPACK's SVD.
constexpr int64_t kSvdMinElements = int64_t{1} << 16;

std::mutex& device_mutex() {
  static std::mutex m;
  return m;
}

struct Fns {
  lrk_status (*create)(const float*, int64_t, int64_t, lrk_cuda_matrix**);
  lrk_status (*apply)(lrk_cuda_matrix*, int, const float*, int64_t, float*);
  void (*destroy)(lrk_cuda_matrix*);
  const char* (*last_error)();
  int (*svd_info)(char*, size_t);
  lrk_status (*svd_f64)(const float*, int64_t, int64_t, float*, float*, float*);
};

struct StackFns {
  lrk_status (*create)(int64_t, int64_t, int64_t, lrk_cuda_stack**);
  void (*destroy)(lrk_cuda_stack*);
  lrk_status (*delta)(lrk_cuda_stack*, int64_t, int64_t, float, const float*, const float*);
  lrk_status (*magnitude)(lrk_cuda_stack*, int64_t, int64_t);
  lrk_status (*dare)(lrk_cuda_stack*, int64_t, double, uint64_t, uint64_t, const uint8_t*);
  lrk_status (*combine)(lrk_cuda_stack*, int, int, const float*, float*);
  lrk_status (*svd)(lrk_cuda_stack*, float*, float*, float*);
};

// PEFT's int(density · n) (merge_ops.cc magnitude_mask): all of n for density >= 1.
int64_t magnitude_keep(double density, int64_t n) {
  return density >= 1.0 ? n : static_cast<int64_t>(density * static_cast<double>(n));
}

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
  f.svd_info = reinterpret_cast<decltype(f.svd_info)>(symbol("lrk_cuda_svd_info"));
  f.svd_f64 = reinterpret_cast<decltype(f.svd_f64)>(symbol("lrk_cuda_svd_f64"));
  if (f.svd_info && f.svd_f64 && f.svd_info(nullptr, 0) == 1) {
    set_svd_f64_provider([f](const Matrix& m, Svd* out) {
      if (m.rows * m.cols < kSvdMinElements) return false;
      std::lock_guard<std::mutex> lock(device_mutex());
      check(f, f.svd_f64(m.ptr(), m.rows, m.cols, out->u.ptr(), out->s.data(), out->vt.ptr()));
      return true;
    });
  }
  StackFns st{};
  st.create = reinterpret_cast<decltype(st.create)>(symbol("lrk_cuda_stack_create"));
  st.destroy = reinterpret_cast<decltype(st.destroy)>(symbol("lrk_cuda_stack_destroy"));
  st.delta = reinterpret_cast<decltype(st.delta)>(symbol("lrk_cuda_stack_delta"));
  st.magnitude = reinterpret_cast<decltype(st.magnitude)>(symbol("lrk_cuda_stack_magnitude"));
  st.dare = reinterpret_cast<decltype(st.dare)>(symbol("lrk_cuda_stack_dare"));
  st.combine = reinterpret_cast<decltype(st.combine)>(symbol("lrk_cuda_stack_combine"));
  st.svd = reinterpret_cast<decltype(st.svd)>(symbol("lrk_cuda_stack_svd"));
  if (st.create && st.destroy && st.delta && st.magnitude && st.dare && st.combine && st.svd) {
    const bool solver = f.svd_info && f.svd_info(nullptr, 0) == 1;
    set_dense_merge_provider([f, st, solver](const DenseMergeRequest& req, Matrix* mixed, Svd* svd) {
      const LoraModule& m0 = *req.terms.at(0).module;
      const int64_t rows = m0.out, cols = m0.in, n = rows * cols;
      if (n < kSvdMinElements) return DenseMergeResult::kNotTaken;
      std::lock_guard<std::mutex> lock(device_mutex());
      lrk_cuda_stack* h = nullptr;
      check(f, st.create(static_cast<int64_t>(req.terms.size()), rows, cols, &h));
      std::unique_ptr<lrk_cuda_stack, void (*)(lrk_cuda_stack*)> stack(h, st.destroy);
      std::vector<float> weights;
      for (size_t i = 0; i < req.terms.size(); i++) {
        const DenseMergeTerm& t = req.terms[i];
        const LoraModule& m = *t.module;
        const auto idx = static_cast<int64_t>(i);
        check(f, st.delta(h, idx, m.r, static_cast<float>(m.scale), m.b.ptr(), m.a.ptr()));
        if (req.magnitude) check(f, st.magnitude(h, idx, magnitude_keep(req.density, n)));
        if (req.dare && req.density < 1.0)
          check(f, st.dare(h, idx, req.density, req.seed, t.dare_stream, t.dare_mask ? t.dare_mask->data() : nullptr));
        weights.push_back(t.weight);
      }
      const int sign_total = req.sign == SignMethod::kTotal ? 1 : 0;
      if (svd && solver) {
        check(f, st.combine(h, req.ties ? 1 : 0, sign_total, weights.data(), nullptr));
        const int64_t k = std::min(rows, cols);
        *svd = Svd{Matrix(rows, k), std::vector<float>(static_cast<size_t>(k)), Matrix(k, cols)};
        check(f, st.svd(h, svd->u.ptr(), svd->s.data(), svd->vt.ptr()));
        return DenseMergeResult::kSvd;
      }
      *mixed = Matrix(rows, cols);
      check(f, st.combine(h, req.ties ? 1 : 0, sign_total, weights.data(), mixed->ptr()));
      return DenseMergeResult::kMixed;
    });
  }
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
