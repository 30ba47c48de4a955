// Compression of dense weights (METHODS §3.3–3.5): EoRA eigenspace low-rank compensation
// (also the activation-aware base SVD, with Ŵ = 0), and CUR with DEIM index selection.
// Plain truncated SVD and extraction are factor_dense (merge_delta.h).
#pragma once
#include <cstdint>
#include <vector>

#include "lowrank/adapter.h"

namespace lowrank {

struct EoraResult {
  LoraModule module;               // rank r, scale 1: ΔW ≈ B A in the calibration eigenspace
  std::vector<double> eigenvalues;  // of C = Σ x xᵀ, ascending, after the floor
  int64_t floored = 0;              // eigenvalues raised to the floor (negative or tiny)
  double error_before = 0;          // ‖ΔW Xᵀ‖_F
  double error_after = 0;           // ‖(ΔW − BA) Xᵀ‖_F
};

/**
 * EoRA: C = XᵀX (fp64), C = Q diag(λ) Qᵀ with λ floored at floor·λ_max (negatives raised to
 * the smallest positive first, as the reference), SVD of ΔW Q diag(√λ), B = U_r diag(√σ_r),
 * A = diag(√σ_r) V_rᵀ diag(1/√λ) Qᵀ. delta [out, in], x [n, in].
 */
EoraResult eora(const Matrix& delta, const Matrix& x, int64_t rank, double eigen_floor);

struct CurResult {
  std::vector<int64_t> rows;  // I (k of out), in DEIM order
  std::vector<int64_t> cols;  // J (k of in)
  Matrix c;                   // W[:, J]  [out, k]
  Matrix u;                   // C⁺ W R⁺ [k, k]
  Matrix r;                   // W[I, :]  [k, in]
  double rel_error = 0;       // ‖W − CUR‖_F / ‖W‖_F
};

/** DEIM indices of the columns of v [n, k] (lowest index on ties). */
std::vector<int64_t> deim(const Matrix& v);

/**
 * CUR of w [out, in] with k columns and rows from DEIM on the top-k singular vectors of
 * W diag(colWeight) (colWeight: calibration column norms ‖X_{:,j}‖, empty = ones).
 */
CurResult cur_decompose(const Matrix& w, int64_t k, const std::vector<float>& col_weight);

/** Moore–Penrose pseudo-inverse by thin SVD (f64), σ below rcond·σ_max dropped. */
Matrix pinv(const Matrix& m, double rcond = 1e-6);

}  // namespace lowrank
