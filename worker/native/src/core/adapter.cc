// Exact factor algebra on one LoRA module (METHODS §0.4).
#include "lowrank/adapter.h"

#include <algorithm>
#include <cmath>

#include "lowrank/error.h"

namespace lowrank {

void check_module(const LoraModule& m, const std::string& what) {
  if (m.r < 1 || m.in < 1 || m.out < 1) {
    throw Error("invalid_argument", what + ": r, in and out must be >= 1 (got r=" + std::to_string(m.r) +
                                        ", in=" + std::to_string(m.in) + ", out=" + std::to_string(m.out) + ")");
  }
  if (m.a.rows != m.r || m.a.cols != m.in) {
    throw Error("invalid_argument", what + ": A must be [r, in] = [" + std::to_string(m.r) + ", " +
                                        std::to_string(m.in) + "], got [" + std::to_string(m.a.rows) + ", " +
                                        std::to_string(m.a.cols) + "]");
  }
  if (m.b.rows != m.out || m.b.cols != m.r) {
    throw Error("invalid_argument", what + ": B must be [out, r] = [" + std::to_string(m.out) + ", " +
                                        std::to_string(m.r) + "], got [" + std::to_string(m.b.rows) + ", " +
                                        std::to_string(m.b.cols) + "]");
  }
  if (!std::isfinite(m.scale)) throw Error("invalid_argument", what + ": scale is not finite");
}

// [out, r] x [r, in] -> [out, in]. The scale rides in the GEMM's alpha; PEFT's
// (B @ A) * s rounds once more, an ulp per entry at most.
Matrix delta_weight(const LoraModule& m) { return matmul(m.b, false, m.a, false, static_cast<float>(m.scale)); }

// B [out, r] = Qb [out, kb] Rb [kb, r]; Aᵀ [in, r] = Qa [in, ka] Ra [ka, r];
// K = s Rb Raᵀ [kb, ka] = Uk diag(σ) Vkᵀ; U = Qb Uk [out, t]; Vt = Vkᵀ Qaᵀ [t, in].
Svd factored_svd(const LoraModule& m) {
  check_module(m, "factored svd");
  Matrix qb, rb, qa, ra;
  qr_thin(m.b, &qb, &rb);
  qr_thin(transpose(m.a), &qa, &ra);
  Matrix core = matmul(rb, false, ra, true, static_cast<float>(m.scale));
  Svd small = svd_thin_f64(core);  // [r, r]: double costs nothing here
  Svd out{matmul(qb, false, small.u, false), small.s, matmul(small.vt, false, qa, true)};
  apply_sign_rule(&out);
  return out;
}

// U [out, t], s [t], Vt [t, in] -> B' [out, k], A' [k, in]; triplets past t are zero.
LoraModule refactor(const Svd& svd, int64_t k, double target_scale, Split split) {
  if (k < 1) throw Error("invalid_argument", "refactor: rank must be >= 1");
  if (!(target_scale > 0.0) || !std::isfinite(target_scale)) {
    throw Error("invalid_argument", "refactor: target scale must be finite and > 0");
  }
  int64_t out_dim = svd.u.rows, in_dim = svd.vt.cols;
  int64_t t = std::min<int64_t>(k, static_cast<int64_t>(svd.s.size()));
  LoraModule m;
  m.r = k;
  m.in = in_dim;
  m.out = out_dim;
  m.scale = target_scale;
  m.a = Matrix(k, in_dim);
  m.b = Matrix(out_dim, k);
  for (int64_t i = 0; i < t; i++) {
    double sigma = svd.s[static_cast<size_t>(i)];
    double fb = split == Split::kBalanced ? std::sqrt(sigma / target_scale) : sigma / target_scale;
    double fa = split == Split::kBalanced ? std::sqrt(sigma / target_scale) : 1.0;
    for (int64_t j = 0; j < out_dim; j++) m.b.at(j, i) = static_cast<float>(svd.u.at(j, i) * fb);
    for (int64_t j = 0; j < in_dim; j++) m.a.at(i, j) = static_cast<float>(svd.vt.at(i, j) * fa);
  }
  return m;
}

// G = B1ᵀ B2 [r1, r2], H = A1 A2ᵀ [r1, r2]; result s1 s2 Σ G ⊙ H (summed in double).
double factored_inner(const LoraModule& x, const LoraModule& y) {
  check_module(x, "inner product (first)");
  check_module(y, "inner product (second)");
  if (x.out != y.out || x.in != y.in) throw Error("invalid_argument", "inner product: the deltas differ in shape");
  Matrix g = matmul(x.b, true, y.b, false);
  Matrix h = matmul(x.a, false, y.a, true);
  double acc = 0.0;
  for (size_t i = 0; i < g.data.size(); i++) acc += static_cast<double>(g.data[i]) * h.data[i];
  return acc * x.scale * y.scale;
}

}  // namespace lowrank
