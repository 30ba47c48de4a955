// GEMM, thin QR and thin SVD over row-major fp32 matrices (OpenBLAS + LAPACKE), with
// canonical outputs: diag(R) >= 0 and the SVD sign rule of METHODS §0.1.
#include "lowrank/linalg.h"

#include <cblas.h>
#include <lapacke.h>

#include <cmath>
#include <string>
#include <utility>

#include "lowrank/error.h"

namespace lowrank {

namespace {

std::string shape(const Matrix& m) { return "[" + std::to_string(m.rows) + ", " + std::to_string(m.cols) + "]"; }

void check_finite(const Matrix& m, const char* what) {
  for (float x : m.data) {
    if (!std::isfinite(x)) throw Error("invalid_argument", std::string(what) + ": the matrix contains NaN or Inf");
  }
}

void check_lapack_size(const Matrix& m, const char* what) {
  // LAPACKE takes 32-bit ints; refuse rather than overflow.
  if (m.rows > INT32_MAX || m.cols > INT32_MAX || m.rows * m.cols > (int64_t{1} << 40)) {
    throw Error("invalid_argument", std::string(what) + ": matrix " + shape(m) + " is too large for LAPACK");
  }
}

}  // namespace

// C [m, n] = alpha op(A) op(B) + beta C, op(A) [m, k], op(B) [k, n].
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m < 0 || n < 0 || k < 0) throw Error("invalid_argument", "gemm: negative dimension");
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS would leave C alone only for beta = 1; make the empty sum explicit.
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

// alpha op(a) op(b): op(a) [m, k], op(b) [k, n] -> [m, n].
Matrix matmul(const Matrix& a, bool trans_a, const Matrix& b, bool trans_b, float alpha) {
  int64_t m = trans_a ? a.cols : a.rows;
  int64_t k = trans_a ? a.rows : a.cols;
  int64_t kb = trans_b ? b.cols : b.rows;
  int64_t n = trans_b ? b.rows : b.cols;
  if (k != kb) {
    throw Error("invalid_argument", "matmul: inner dimensions differ: " + shape(a) + (trans_a ? "ᵀ" : "") + " x " +
                                        shape(b) + (trans_b ? "ᵀ" : ""));
  }
  Matrix c(m, n);
  gemm(trans_a, trans_b, m, n, k, alpha, a.ptr(), a.cols, b.ptr(), b.cols, 0.0f, c.ptr(), n);
  return c;
}

// [m, n] -> [n, m].
Matrix transpose(const Matrix& m) {
  Matrix t(m.cols, m.rows);
  for (int64_t i = 0; i < m.rows; i++)
    for (int64_t j = 0; j < m.cols; j++) t.at(j, i) = m.at(i, j);
  return t;
}

// M [m, n] = Q [m, k] R [k, n], k = min(m, n); sgeqrf + sorgqr, then each negative R_ii
// flips row i of R and column i of Q (the factorisation is unchanged, the output canonical).
void qr_thin(const Matrix& m, Matrix* q, Matrix* r) {
  check_lapack_size(m, "qr");
  check_finite(m, "qr");
  int64_t rows = m.rows, cols = m.cols, k = std::min(rows, cols);
  *q = Matrix(rows, k);
  *r = Matrix(k, cols);
  if (k == 0) return;
  Matrix a = m;
  std::vector<float> tau(static_cast<size_t>(k));
  lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, static_cast<lapack_int>(rows), static_cast<lapack_int>(cols),
                                   a.ptr(), static_cast<lapack_int>(cols), tau.data());
  if (info != 0) throw Error("internal", "qr: sgeqrf failed with info " + std::to_string(info));
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = i; j < cols; j++) r->at(i, j) = a.at(i, j);
  info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, static_cast<lapack_int>(rows), static_cast<lapack_int>(k),
                        static_cast<lapack_int>(k), a.ptr(), static_cast<lapack_int>(cols), tau.data());
  if (info != 0) throw Error("internal", "qr: sorgqr failed with info " + std::to_string(info));
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < k; j++) q->at(i, j) = a.at(i, j);
  for (int64_t i = 0; i < k; i++) {
    if (r->at(i, i) >= 0.0f) continue;
    for (int64_t j = 0; j < cols; j++) r->at(i, j) = -r->at(i, j);
    for (int64_t j = 0; j < rows; j++) q->at(j, i) = -q->at(j, i);
  }
}

// U [m, k], Vt [k, n]: flip (u_i, v_i) so the largest-|.| entry of u_i is positive.
void apply_sign_rule(Svd* svd) {
  Matrix& u = svd->u;
  Matrix& vt = svd->vt;
  for (int64_t i = 0; i < u.cols; i++) {
    int64_t best = 0;
    float best_abs = -1.0f;
    for (int64_t j = 0; j < u.rows; j++) {
      float v = std::fabs(u.at(j, i));
      if (v > best_abs) {  // strict: the lowest index wins ties
        best_abs = v;
        best = j;
      }
    }
    if (u.rows == 0 || u.at(best, i) >= 0.0f) continue;
    for (int64_t j = 0; j < u.rows; j++) u.at(j, i) = -u.at(j, i);
    for (int64_t j = 0; j < vt.cols; j++) vt.at(i, j) = -vt.at(i, j);
  }
}

// M [m, n] = U [m, k] diag(s [k]) Vt [k, n], k = min(m, n).
Svd svd_thin(const Matrix& m) {
  check_lapack_size(m, "svd");
  check_finite(m, "svd");
  int64_t rows = m.rows, cols = m.cols, k = std::min(rows, cols);
  Svd out{Matrix(rows, k), std::vector<float>(static_cast<size_t>(k)), Matrix(k, cols)};
  if (k == 0) return out;
  Matrix a = m;
  lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', static_cast<lapack_int>(rows),
                                   static_cast<lapack_int>(cols), a.ptr(), static_cast<lapack_int>(cols),
                                   out.s.data(), out.u.ptr(), static_cast<lapack_int>(k), out.vt.ptr(),
                                   static_cast<lapack_int>(cols));
  if (info != 0) {  // gesdd's divide and conquer can fail to converge; gesvd is slower but sturdier.
    a = m;
    std::vector<float> superb(static_cast<size_t>(k));
    info = LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', static_cast<lapack_int>(rows), static_cast<lapack_int>(cols),
                          a.ptr(), static_cast<lapack_int>(cols), out.s.data(), out.u.ptr(),
                          static_cast<lapack_int>(k), out.vt.ptr(), static_cast<lapack_int>(cols), superb.data());
    if (info != 0) throw Error("internal", "svd: sgesdd and sgesvd failed on " + shape(m));
  }
  apply_sign_rule(&out);
  return out;
}

namespace {

SvdF64Provider& svd_provider() {
  static SvdF64Provider f;
  return f;
}

}  // namespace

void set_svd_f64_provider(SvdF64Provider f) { svd_provider() = std::move(f); }

// As svd_thin, in double: M [m, n] (fp32) -> U, s, Vt rounded to fp32, sign rule applied.
// The installed backend's (cuSOLVER) when it takes m, else LAPACK's.
Svd svd_thin_f64(const Matrix& m) {
  check_lapack_size(m, "svd");
  check_finite(m, "svd");
  int64_t rows = m.rows, cols = m.cols, k = std::min(rows, cols);
  Svd out{Matrix(rows, k), std::vector<float>(static_cast<size_t>(k)), Matrix(k, cols)};
  if (k == 0) return out;
  if (const SvdF64Provider& provider = svd_provider(); provider && provider(m, &out)) {
    apply_sign_rule(&out);
    return out;
  }
  std::vector<double> a(m.data.begin(), m.data.end()), s(static_cast<size_t>(k));
  std::vector<double> u(static_cast<size_t>(rows * k)), vt(static_cast<size_t>(k * cols));
  lapack_int lr = static_cast<lapack_int>(rows), lc = static_cast<lapack_int>(cols), lk = static_cast<lapack_int>(k);
  lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', lr, lc, a.data(), lc, s.data(), u.data(), lk, vt.data(), lc);
  if (info != 0) {
    a.assign(m.data.begin(), m.data.end());
    std::vector<double> superb(static_cast<size_t>(k));
    info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', lr, lc, a.data(), lc, s.data(), u.data(), lk, vt.data(), lc,
                          superb.data());
    if (info != 0) throw Error("internal", "svd: dgesdd and dgesvd failed on " + shape(m));
  }
  for (size_t i = 0; i < s.size(); i++) out.s[i] = static_cast<float>(s[i]);
  for (size_t i = 0; i < u.size(); i++) out.u.data[i] = static_cast<float>(u[i]);
  for (size_t i = 0; i < vt.size(); i++) out.vt.data[i] = static_cast<float>(vt[i]);
  apply_sign_rule(&out);
  return out;
}

void set_blas_threads(int n) {
  if (n < 1) throw Error("invalid_argument", "blas threads must be >= 1");
  openblas_set_num_threads(n);
}

int blas_threads() { return openblas_get_num_threads(); }

}  // namespace lowrank
