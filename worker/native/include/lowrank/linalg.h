// Dense fp32 linear algebra on the CPU (METHODS §7 P1, P4, P5, P6): GEMM, thin QR, thin
// SVD and randomized SVD over row-major buffers, backed by OpenBLAS and LAPACKE.
// Results are canonical (R's diagonal >= 0, the SVD sign rule of §0.1) so that two runs,
// or two backends, can be compared entry by entry.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace lowrank {

/** A row-major fp32 matrix that owns its data: element (i, j) is data[i * cols + j]. */
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;

  Matrix() = default;
  Matrix(int64_t r, int64_t c) : rows(r), cols(c), data(static_cast<size_t>(r * c), 0.0f) {}
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  float& at(int64_t i, int64_t j) { return data[static_cast<size_t>(i * cols + j)]; }
  float at(int64_t i, int64_t j) const { return data[static_cast<size_t>(i * cols + j)]; }
};

/** Thin SVD M = U diag(s) Vt, s descending: U [m, k], s [k], Vt [k, n], k <= min(m, n). */
struct Svd {
  Matrix u;
  std::vector<float> s;
  Matrix vt;
};

/** C = alpha * op(A) op(B) + beta * C on raw row-major buffers (cblas_sgemm). */
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

/** alpha * op(A) op(B) as a new matrix; shapes are checked. */
Matrix matmul(const Matrix& a, bool trans_a, const Matrix& b, bool trans_b, float alpha = 1.0f);

Matrix transpose(const Matrix& m);

/** Thin Householder QR, M [m, n] = Q [m, k] R [k, n], k = min(m, n), diag(R) >= 0. */
void qr_thin(const Matrix& m, Matrix* q, Matrix* r);

/** Thin SVD (gesdd, gesvd if gesdd fails) with the sign rule of METHODS §0.1. */
Svd svd_thin(const Matrix& m);

/**
 * The same thin SVD computed in double (dgesdd/dgesvd) and rounded to fp32 once: fp32
 * gesdd's subspace error (~n·eps·σ1/gap) would dominate truncations with small gaps at the
 * cut, so the merges and the factored core use this one.
 */
Svd svd_thin_f64(const Matrix& m);

/**
 * Another backend's svd_thin_f64 (the CUDA one's: cuSOLVER in double): fills U, s, Vt
 * (before the sign rule) and answers true, or answers false to leave m to LAPACK (too
 * small to be worth the trip). Throws on a device error.
 */
using SvdF64Provider = std::function<bool(const Matrix&, Svd*)>;
/** Installs the provider svd_thin_f64 tries first (the addon, once, when the CUDA backend is chosen). */
void set_svd_f64_provider(SvdF64Provider f);

/** Flips (u_i, v_i) so the largest-|.| entry of u_i is positive (lowest index on ties). */
void apply_sign_rule(Svd* svd);

/** An implicit operator M [m, n]: apply(X [n, l]) -> M X [m, l], apply_t(Y [m, l]) -> Mᵀ Y [n, l]. */
struct LinearOperator {
  int64_t rows = 0;
  int64_t cols = 0;
  std::function<Matrix(const Matrix&)> apply;
  std::function<Matrix(const Matrix&)> apply_t;
};

/** The operator of a dense matrix; m must outlive it (it is referenced, not copied). */
LinearOperator dense_operator(const Matrix& m);

/** Makes the operator of a dense matrix (m outlives the operator); another backend's (the CUDA one's: M on the device). */
using DenseOperatorFactory = std::function<LinearOperator(const Matrix&)>;
/** Installs the factory backend_dense_operator uses (the addon, once, when the CUDA backend is chosen). */
void set_dense_operator_factory(DenseOperatorFactory f);
/** The randomized SVDs' operator for m: the installed backend's, else dense_operator(m). */
LinearOperator backend_dense_operator(const Matrix& m);

struct RandomizedSvdOptions {
  int64_t rank = 0;        // k
  int64_t oversample = 10;  // p; torch.svd_lowrank uses 0
  int niter = 4;            // power iterations, each re-orthonormalised after both half-steps
  uint64_t seed = 0;
  uint64_t stream = 0;
};

/** Halko–Martinsson–Tropp randomized SVD of an operator; deterministic for (seed, stream). */
Svd randomized_svd(const LinearOperator& op, const RandomizedSvdOptions& opts);

/** Sets the OpenBLAS thread count (results are deterministic for a given count). */
void set_blas_threads(int n);
int blas_threads();

}  // namespace lowrank
