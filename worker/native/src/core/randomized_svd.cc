// Randomized SVD (Halko, Martinsson, Tropp 2011, Alg. 4.4 + 5.1) of a dense or implicit
// operator (METHODS §7 P6). The Gaussian test matrix comes from Philox, so the result
// depends only on (seed, stream) and the BLAS thread count.
#include <algorithm>

#include "lowrank/error.h"
#include "lowrank/linalg.h"
#include "lowrank/rng.h"

namespace lowrank {

LinearOperator dense_operator(const Matrix& m) {
  LinearOperator op;
  op.rows = m.rows;
  op.cols = m.cols;
  const Matrix* mp = &m;  // the caller keeps m alive while the operator is used
  op.apply = [mp](const Matrix& x) { return matmul(*mp, false, x, false); };
  op.apply_t = [mp](const Matrix& y) { return matmul(*mp, true, y, false); };
  return op;
}

namespace {

DenseOperatorFactory& factory() {
  static DenseOperatorFactory f;
  return f;
}

}  // namespace

void set_dense_operator_factory(DenseOperatorFactory f) { factory() = std::move(f); }

LinearOperator backend_dense_operator(const Matrix& m) {
  const DenseOperatorFactory& f = factory();
  return f ? f(m) : dense_operator(m);
}

namespace {

Matrix orthonormal_basis(const Matrix& y) {
  Matrix q, r;
  qr_thin(y, &q, &r);
  return q;
}

}  // namespace

// M [m, n] ~ U [m, k] diag(s) Vt [k, n] with l = min(k + p, m, n) probe columns:
//   Omega [n, l] ~ N(0, 1); Q = qr(M Omega); niter x { Q = qr(Mᵀ Q); Q = qr(M Q) };
//   B = Qᵀ M [l, n] = (Mᵀ Q)ᵀ; B = Ub diag(s) Vt; U = Q Ub; keep k.
Svd randomized_svd(const LinearOperator& op, const RandomizedSvdOptions& opts) {
  int64_t m = op.rows, n = op.cols;
  if (opts.rank < 1) throw Error("invalid_argument", "randomized svd: rank must be >= 1");
  if (opts.oversample < 0 || opts.niter < 0) {
    throw Error("invalid_argument", "randomized svd: oversample and niter must be >= 0");
  }
  int64_t k = std::min({opts.rank, m, n});
  int64_t l = std::min({opts.rank + opts.oversample, m, n});
  if (k == 0) return Svd{Matrix(m, 0), {}, Matrix(0, n)};

  Matrix omega(n, l);
  philox_fill_normal(opts.seed, opts.stream, 0, n * l, omega.ptr());
  Matrix q = orthonormal_basis(op.apply(omega));
  for (int it = 0; it < opts.niter; it++) {
    q = orthonormal_basis(op.apply_t(q));
    q = orthonormal_basis(op.apply(q));
  }
  Matrix bt = op.apply_t(q);  // [n, l] = Bᵀ
  Svd small = svd_thin(transpose(bt));
  Svd out{matmul(q, false, small.u, false), small.s, small.vt};
  // keep the leading k triplets
  Matrix u(m, k), vt(k, n);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < k; j++) u.at(i, j) = out.u.at(i, j);
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < n; j++) vt.at(i, j) = out.vt.at(i, j);
  out.u = std::move(u);
  out.vt = std::move(vt);
  out.s.resize(static_cast<size_t>(k));
  apply_sign_rule(&out);  // Q Ub moved the largest entries; re-canonicalise
  return out;
}

}  // namespace lowrank
