// EoRA (NVlabs/EoRA, METHODS §3.5) and CUR with DEIM (METHODS §3.4). The covariance, its
// eigendecomposition and the DEIM solves run in double; results are rounded to fp32 once.
#include "lowrank/compress_base.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "lowrank/error.h"

namespace lowrank {

namespace {

[[noreturn]] void bad(const std::string& msg) { throw Error("invalid_argument", msg); }

double fro(const Matrix& m) {
  double s = 0;
  for (float v : m.data) s += static_cast<double>(v) * v;
  return std::sqrt(s);
}

}  // namespace

EoraResult eora(const Matrix& delta, const Matrix& x, int64_t rank, double eigen_floor) {
  const int64_t out = delta.rows, in = delta.cols, n = x.rows;
  if (x.cols != in) bad("eora: calibration activations have " + std::to_string(x.cols) + " features, the weight has in = " + std::to_string(in));
  if (n < 1) bad("eora: no calibration activations");
  if (rank < 1 || rank > std::min(out, in)) bad("eora: rank must be in [1, min(out, in)]");
  if (!(eigen_floor >= 0.0)) bad("eora: eigenFloor must be >= 0");
  // C = XᵀX in fp64.
  std::vector<double> xd(x.data.begin(), x.data.end()), c(static_cast<size_t>(in * in), 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(in), static_cast<int>(n), 1.0, xd.data(),
              static_cast<int>(in), 0.0, c.data(), static_cast<int>(in));
  std::vector<double> lambda(static_cast<size_t>(in));
  lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', static_cast<lapack_int>(in), c.data(),
                                   static_cast<lapack_int>(in), lambda.data());
  if (info != 0) throw Error("internal", "eora: dsyevd failed (info " + std::to_string(info) + ")");
  // c now holds Q (columns = eigenvectors), λ ascending.
  EoraResult r;
  double min_pos = INFINITY, lmax = lambda.back();
  for (double l : lambda)
    if (l > 0) min_pos = std::min(min_pos, l);
  if (!(lmax > 0)) bad("eora: the calibration covariance is zero (all activations are 0)");
  const double floor = eigen_floor * lmax;
  for (double& l : lambda) {
    if (l < 0) {
      l = min_pos;
      r.floored++;
    }
    if (l < floor) {
      l = floor;
      r.floored++;
    }
  }
  // ΔW' = ΔW Q diag(√λ) [out, in].
  std::vector<double> dd(delta.data.begin(), delta.data.end()), dq(static_cast<size_t>(out * in));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(out), static_cast<int>(in), static_cast<int>(in), 1.0,
              dd.data(), static_cast<int>(in), c.data(), static_cast<int>(in), 0.0, dq.data(), static_cast<int>(in));
  Matrix scaled(out, in);
  for (int64_t i = 0; i < out; i++)
    for (int64_t j = 0; j < in; j++)
      scaled.at(i, j) = static_cast<float>(dq[static_cast<size_t>(i * in + j)] * std::sqrt(lambda[static_cast<size_t>(j)]));
  Svd svd = svd_thin_f64(scaled);
  LoraModule m;
  m.r = rank;
  m.in = in;
  m.out = out;
  m.scale = 1.0;
  m.b = Matrix(out, rank);
  m.a = Matrix(rank, in);
  // A = diag(√σ) V_rᵀ diag(1/√λ) Qᵀ, in double.
  std::vector<double> av(static_cast<size_t>(rank * in)), a(static_cast<size_t>(rank * in));
  for (int64_t p = 0; p < rank; p++) {
    const double rs = std::sqrt(static_cast<double>(svd.s[static_cast<size_t>(p)]));
    for (int64_t i = 0; i < out; i++) m.b.at(i, p) = static_cast<float>(svd.u.at(i, p) * rs);
    for (int64_t j = 0; j < in; j++)
      av[static_cast<size_t>(p * in + j)] = rs * svd.vt.at(p, j) / std::sqrt(lambda[static_cast<size_t>(j)]);
  }
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rank), static_cast<int>(in), static_cast<int>(in), 1.0,
              av.data(), static_cast<int>(in), c.data(), static_cast<int>(in), 0.0, a.data(), static_cast<int>(in));
  for (size_t i = 0; i < a.size(); i++) m.a.data[i] = static_cast<float>(a[i]);
  // Objective before and after, on the calibration inputs.
  Matrix resid = delta;
  gemm(false, false, out, in, rank, -1.0f, m.b.ptr(), rank, m.a.ptr(), in, 1.0f, resid.ptr(), in);
  r.error_before = fro(matmul(delta, false, x, true));
  r.error_after = fro(matmul(resid, false, x, true));
  r.eigenvalues = std::move(lambda);
  r.module = std::move(m);
  return r;
}

std::vector<int64_t> deim(const Matrix& v) {
  const int64_t n = v.rows, k = v.cols;
  if (k < 1 || k > n) bad("deim: need 1 <= k <= n vectors");
  std::vector<int64_t> p;
  auto argmax_abs = [&](const std::vector<double>& r) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
      if (std::fabs(r[static_cast<size_t>(i)]) > std::fabs(r[static_cast<size_t>(best)])) best = i;
    return best;
  };
  std::vector<double> col(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) col[static_cast<size_t>(i)] = v.at(i, 0);
  p.push_back(argmax_abs(col));
  for (int64_t j = 1; j < k; j++) {
    // Solve V[p, :j] c = V[p, j]; residual r = V[:, j] − V[:, :j] c.
    std::vector<double> a(static_cast<size_t>(j * j)), b(static_cast<size_t>(j));
    for (int64_t s = 0; s < j; s++) {
      for (int64_t t = 0; t < j; t++) a[static_cast<size_t>(s * j + t)] = v.at(p[static_cast<size_t>(s)], t);
      b[static_cast<size_t>(s)] = v.at(p[static_cast<size_t>(s)], j);
    }
    std::vector<lapack_int> piv(static_cast<size_t>(j));
    lapack_int info = LAPACKE_dgesv(LAPACK_ROW_MAJOR, static_cast<lapack_int>(j), 1, a.data(), static_cast<lapack_int>(j), piv.data(),
                                    b.data(), 1);
    if (info != 0) throw Error("internal", "deim: singular interpolation matrix at step " + std::to_string(j));
    for (int64_t i = 0; i < n; i++) {
      double s = v.at(i, j);
      for (int64_t t = 0; t < j; t++) s -= static_cast<double>(v.at(i, t)) * b[static_cast<size_t>(t)];
      col[static_cast<size_t>(i)] = s;
    }
    p.push_back(argmax_abs(col));
  }
  return p;
}

Matrix pinv(const Matrix& m, double rcond) {
  Svd s = svd_thin_f64(m);
  const int64_t k = static_cast<int64_t>(s.s.size());
  Matrix out(m.cols, m.rows);
  if (k == 0) return out;
  const double cut = rcond * s.s[0];
  for (int64_t p = 0; p < k; p++) {
    double sv = s.s[static_cast<size_t>(p)];
    if (!(sv > cut)) continue;
    for (int64_t i = 0; i < m.cols; i++) {
      const double vi = s.vt.at(p, i) / sv;
      for (int64_t j = 0; j < m.rows; j++) out.at(i, j) += static_cast<float>(vi * s.u.at(j, p));
    }
  }
  return out;
}

CurResult cur_decompose(const Matrix& w, int64_t k, const std::vector<float>& col_weight) {
  const int64_t out = w.rows, in = w.cols;
  if (k < 1 || k > std::min(out, in)) bad("cur: rank must be in [1, min(out, in)] = [1, " + std::to_string(std::min(out, in)) + "]");
  if (!col_weight.empty() && static_cast<int64_t>(col_weight.size()) != in) bad("cur: give one column weight per input feature");
  Matrix scaled = w;
  if (!col_weight.empty())
    for (int64_t i = 0; i < out; i++)
      for (int64_t j = 0; j < in; j++) scaled.at(i, j) *= col_weight[static_cast<size_t>(j)];
  Svd s = svd_thin_f64(scaled);
  Matrix uk(out, k), vk(in, k);
  for (int64_t i = 0; i < out; i++)
    for (int64_t p = 0; p < k; p++) uk.at(i, p) = s.u.at(i, p);
  for (int64_t j = 0; j < in; j++)
    for (int64_t p = 0; p < k; p++) vk.at(j, p) = s.vt.at(p, j);
  CurResult r;
  r.rows = deim(uk);
  r.cols = deim(vk);
  r.c = Matrix(out, k);
  r.r = Matrix(k, in);
  for (int64_t i = 0; i < out; i++)
    for (int64_t p = 0; p < k; p++) r.c.at(i, p) = w.at(i, r.cols[static_cast<size_t>(p)]);
  for (int64_t p = 0; p < k; p++)
    for (int64_t j = 0; j < in; j++) r.r.at(p, j) = w.at(r.rows[static_cast<size_t>(p)], j);
  r.u = matmul(matmul(pinv(r.c), false, w, false), false, pinv(r.r), false);
  Matrix approx = matmul(matmul(r.c, false, r.u, false), false, r.r, false);
  double num = 0, den = 0;
  for (size_t i = 0; i < w.data.size(); i++) {
    num += std::pow(static_cast<double>(w.data[i]) - approx.data[i], 2);
    den += static_cast<double>(w.data[i]) * w.data[i];
  }
  r.rel_error = den > 0 ? std::sqrt(num / den) : 0.0;
  return r;
}

}  // namespace lowrank
