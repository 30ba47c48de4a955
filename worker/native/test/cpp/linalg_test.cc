// Invariants of the dense linear algebra, the factored adapter algebra and the Philox
// stream, at the tolerances of METHODS §8.1. Known-answer vectors pin the RNG bytes.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>

#include "lowrank/adapter.h"
#include "lowrank/error.h"
#include "lowrank/linalg.h"
#include "lowrank/rng.h"
#include "lowrank/spectra.h"

namespace lowrank {
namespace {

Matrix gaussian(int64_t rows, int64_t cols, uint64_t stream) {
  Matrix m(rows, cols);
  philox_fill_normal(1234, stream, 0, rows * cols, m.ptr());
  return m;
}

double fro(const Matrix& m) {
  double s = 0;
  for (float x : m.data) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

Matrix reconstruct(const Svd& s) {
  Matrix us = s.u;
  for (int64_t i = 0; i < us.rows; i++)
    for (int64_t j = 0; j < us.cols; j++) us.at(i, j) *= s.s[static_cast<size_t>(j)];
  return matmul(us, false, s.vt, false);
}

double orthonormality_error(const Matrix& q) {  // max |QᵀQ − I|
  Matrix g = matmul(q, true, q, false);
  double e = 0;
  for (int64_t i = 0; i < g.rows; i++)
    for (int64_t j = 0; j < g.cols; j++) e = std::max(e, std::fabs(g.at(i, j) - (i == j ? 1.0 : 0.0)));
  return e;
}

// Random123 kat_vectors for philox4x32_10.
TEST(Philox, KnownAnswers) {
  PhiloxBlock z = philox4x32_10({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(z, (PhiloxBlock{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  PhiloxBlock f = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(f, (PhiloxBlock{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  PhiloxBlock p = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u});
  EXPECT_EQ(p, (PhiloxBlock{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

// Pins our (seed, stream, index) layout and the distributions built on it.
TEST(Philox, StreamLayoutAndDistributions) {
  EXPECT_EQ(philox_u32(0, 0, 0), 0x6627e8d5u);  // block 0 of stream 0 with seed 0 is the zero-counter vector
  EXPECT_EQ(philox_u32(0, 0, 3), 0x9b00dbd8u);
  EXPECT_EQ(philox_uniform(0, 0, 0), static_cast<float>((0x6627e8d5u >> 8) * 0x1p-24));
  // fills agree with the per-element functions at any offset (thread-count independence)
  std::vector<float> a(37), b(37);
  philox_fill_normal(7, 9, 3, 37, a.data());
  for (int i = 0; i < 37; i++) b[static_cast<size_t>(i)] = philox_normal(7, 9, 3 + static_cast<uint64_t>(i));
  EXPECT_EQ(a, b);
  philox_fill_uniform(7, 9, 5, 37, a.data());
  for (int i = 0; i < 37; i++) b[static_cast<size_t>(i)] = philox_uniform(7, 9, 5 + static_cast<uint64_t>(i));
  EXPECT_EQ(a, b);
  // moments of 2^18 normals: mean 0 ± 5 sd, variance 1 ± 5 sd
  const int64_t n = 1 << 18;
  std::vector<float> z(static_cast<size_t>(n));
  philox_fill_normal(42, stream_id("test"), 0, n, z.data());
  double s = 0, s2 = 0;
  for (float x : z) {
    s += x;
    s2 += static_cast<double>(x) * x;
  }
  EXPECT_NEAR(s / n, 0.0, 5.0 / std::sqrt(static_cast<double>(n)));
  EXPECT_NEAR(s2 / n, 1.0, 5.0 * std::sqrt(2.0 / static_cast<double>(n)));
  EXPECT_NE(stream_id("dare:a"), stream_id("dare:b"));
}

TEST(Gemm, TransposesAlphaBeta) {
  Matrix a = gaussian(5, 3, 1), b = gaussian(4, 5, 2);
  Matrix c = gaussian(3, 4, 3);
  Matrix expect(3, 4);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) {
      double s = 0;
      for (int k = 0; k < 5; k++) s += static_cast<double>(a.at(k, i)) * b.at(j, k);
      expect.at(i, j) = static_cast<float>(2.0 * s + 0.5 * c.at(i, j));
    }
  gemm(true, true, 3, 4, 5, 2.0f, a.ptr(), 3, b.ptr(), 5, 0.5f, c.ptr(), 4);
  EXPECT_LT(rel_diff(c, expect), 1e-6);
  EXPECT_THROW(matmul(a, false, b, false), Error);
}

TEST(Qr, ReconstructsOrthonormalNonNegativeDiagonal) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{50, 8}, {8, 50}, {33, 33}}) {
    Matrix x = gaussian(m, n, 10 + static_cast<uint64_t>(m));
    Matrix q, r;
    qr_thin(x, &q, &r);
    int64_t k = std::min(m, n);
    ASSERT_EQ(q.rows, m);
    ASSERT_EQ(q.cols, k);
    ASSERT_EQ(r.rows, k);
    EXPECT_LT(rel_diff(matmul(q, false, r, false), x), 1e-6);
    EXPECT_LT(orthonormality_error(q), 1e-6 * std::sqrt(static_cast<double>(k)));
    for (int64_t i = 0; i < k; i++) EXPECT_GE(r.at(i, i), 0.0f);
    for (int64_t i = 1; i < k; i++)
      for (int64_t j = 0; j < i; j++) EXPECT_EQ(r.at(i, j), 0.0f);
  }
}

TEST(Svd, ReconstructsOrthonormalSortedSignRule) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{60, 12}, {12, 60}, {40, 40}}) {
    Matrix x = gaussian(m, n, 20 + static_cast<uint64_t>(m));
    Svd s = svd_thin(x);
    EXPECT_LT(rel_diff(reconstruct(s), x), 1e-6);
    EXPECT_LT(orthonormality_error(s.u), 1e-5);
    EXPECT_LT(orthonormality_error(transpose(s.vt)), 1e-5);
    for (size_t i = 1; i < s.s.size(); i++) EXPECT_GE(s.s[i - 1], s.s[i]);
    for (int64_t i = 0; i < s.u.cols; i++) {  // largest |u_ji| is positive
      int64_t best = 0;
      for (int64_t j = 1; j < s.u.rows; j++)
        if (std::fabs(s.u.at(j, i)) > std::fabs(s.u.at(best, i))) best = j;
      EXPECT_GT(s.u.at(best, i), 0.0f);
    }
  }
  Matrix bad(2, 2);
  bad.at(0, 0) = NAN;
  EXPECT_THROW(svd_thin(bad), Error);
}

TEST(Svd, DoublePrecisionPathAgreesAndCanonicalises) {
  Matrix x = gaussian(45, 30, 77);
  Svd s = svd_thin(x), d = svd_thin_f64(x);
  for (size_t i = 0; i < s.s.size(); i++) EXPECT_NEAR(s.s[i], d.s[i], 1e-5 * d.s[0]);
  EXPECT_LT(rel_diff(reconstruct(d), x), 1e-6);
  for (int64_t i = 0; i < d.u.cols; i++) {  // same sign rule: columns agree directly (random ⇒ gaps)
    double dot = 0;
    for (int64_t j = 0; j < d.u.rows; j++) dot += static_cast<double>(s.u.at(j, i)) * d.u.at(j, i);
    EXPECT_GT(dot, 1 - 1e-4);
  }
}

TEST(Svd, SignRuleBreaksTiesByLowestIndex) {
  Svd s{Matrix(2, 1), {1.0f}, Matrix(1, 2)};
  s.u.at(0, 0) = -0.5f;
  s.u.at(1, 0) = 0.5f;
  s.vt.at(0, 0) = 1.0f;
  apply_sign_rule(&s);
  EXPECT_EQ(s.u.at(0, 0), 0.5f);
  EXPECT_EQ(s.vt.at(0, 0), -1.0f);
}

TEST(RandomizedSvd, NearOptimalAndDeterministic) {
  // M = G1 diag(decay) G2 with a gap after rank 10
  int64_t m = 300, n = 200;
  Matrix g1 = gaussian(m, 40, 31), g2 = gaussian(40, n, 32);
  for (int64_t j = 0; j < 40; j++)
    for (int64_t i = 0; i < m; i++) g1.at(i, j) *= static_cast<float>(j < 10 ? 10.0 / (1 + j) : 0.01 / (1 + j));
  Matrix x = matmul(g1, false, g2, false);
  Svd exact = svd_thin(x);
  RandomizedSvdOptions o;
  o.rank = 10;
  o.seed = 5;
  Svd a = randomized_svd(dense_operator(x), o);
  Svd b = randomized_svd(dense_operator(x), o);
  EXPECT_EQ(a.s, b.s);
  EXPECT_EQ(a.u.data, b.u.data);
  for (int i = 0; i < 10; i++) EXPECT_NEAR(a.s[static_cast<size_t>(i)], exact.s[static_cast<size_t>(i)], 1e-3 * exact.s[static_cast<size_t>(i)]);
  // ‖M − M_k‖ within (1 + 1e-3) of the optimum
  Matrix diff = reconstruct(a);
  for (size_t i = 0; i < diff.data.size(); i++) diff.data[i] -= x.data[i];
  double opt = 0;
  for (size_t i = 10; i < exact.s.size(); i++) opt += static_cast<double>(exact.s[i]) * exact.s[i];
  EXPECT_LE(fro(diff), (1 + 1e-3) * std::sqrt(opt) + 1e-6 * exact.s[0]);
}

LoraModule random_module(int64_t r, int64_t in, int64_t out, double scale, uint64_t stream) {
  LoraModule m;
  m.r = r;
  m.in = in;
  m.out = out;
  m.scale = scale;
  m.a = gaussian(r, in, stream);
  m.b = gaussian(out, r, stream + 1);
  return m;
}

TEST(FactoredSvd, MatchesDenseSvdOfDelta) {
  LoraModule m = random_module(8, 70, 50, 0.37, 40);
  Svd f = factored_svd(m);
  Matrix delta = delta_weight(m);
  Svd d = svd_thin(delta);
  ASSERT_EQ(f.s.size(), 8u);
  for (size_t i = 0; i < 8; i++) EXPECT_NEAR(f.s[i], d.s[i], 1e-5 * d.s[0]);
  EXPECT_LT(rel_diff(reconstruct(f), delta), 1e-5);
  // same sign rule on both sides: the singular vectors agree directly (random ⇒ gaps)
  for (int64_t i = 0; i < 8; i++) {
    double dot = 0;
    for (int64_t j = 0; j < 50; j++) dot += static_cast<double>(f.u.at(j, i)) * d.u.at(j, i);
    EXPECT_GT(dot, 1 - 1e-5);
  }
}

TEST(Refactor, BalancedAndBHeavyKeepTheProduct) {
  LoraModule m = random_module(6, 30, 20, 2.0, 50);
  Svd f = factored_svd(m);
  Matrix delta = delta_weight(m);
  for (Split split : {Split::kBalanced, Split::kBHeavy}) {
    LoraModule r = refactor(f, 8, 0.5, split);  // k > rank: zero-padded
    EXPECT_EQ(r.r, 8);
    EXPECT_LT(rel_diff(delta_weight(r), delta), 1e-5);
    if (split == Split::kBalanced) {
      for (int64_t i = 0; i < 6; i++) {
        double nb = 0, na = 0;
        for (int64_t j = 0; j < 20; j++) nb += static_cast<double>(r.b.at(j, i)) * r.b.at(j, i);
        for (int64_t j = 0; j < 30; j++) na += static_cast<double>(r.a.at(i, j)) * r.a.at(i, j);
        EXPECT_NEAR(nb, na, 1e-4 * na);
      }
    }
  }
}

TEST(FactoredInner, MatchesDenseInnerProduct) {
  LoraModule x = random_module(4, 30, 20, 0.5, 60), y = random_module(7, 30, 20, -1.5, 62);
  Matrix dx = delta_weight(x), dy = delta_weight(y);
  double dense = 0;
  for (size_t i = 0; i < dx.data.size(); i++) dense += static_cast<double>(dx.data[i]) * dy.data[i];
  EXPECT_NEAR(factored_inner(x, y), dense, 1e-5 * fro(dx) * fro(dy));
}

TEST(Spectra, DefinitionsOfMethodsSection6) {
  // B = diag-ish so σ is known: σ = (4, 2, 1) · s
  LoraModule m;
  m.r = 3;
  m.in = 5;
  m.out = 4;
  m.scale = 0.5;
  m.a = Matrix(3, 5);
  m.b = Matrix(4, 3);
  float sv[3] = {8, 4, 2};
  for (int i = 0; i < 3; i++) {
    m.a.at(i, i) = 1.0f;
    m.b.at(i, i) = sv[i];
  }
  Spectra s = module_spectra(m);
  ASSERT_EQ(s.sigma.size(), 3u);
  EXPECT_NEAR(s.sigma[0], 4.0, 1e-6);
  EXPECT_NEAR(s.sigma[2], 1.0, 1e-6);
  EXPECT_NEAR(s.fro, std::sqrt(21.0), 1e-6);
  EXPECT_NEAR(s.nuc, 7.0, 1e-6);
  EXPECT_NEAR(s.spec, 4.0, 1e-6);
  EXPECT_NEAR(s.srank, 21.0 / 16.0, 1e-6);
  EXPECT_EQ(s.k_at[0], 1);  // E(1) = 16/21 = 0.76
  EXPECT_EQ(s.k_at[1], 2);  // E(2) = 20/21 = 0.952
  EXPECT_EQ(s.k_at[2], 2);
  EXPECT_EQ(s.k_at[3], 3);
  double p[3] = {4 / 7.0, 2 / 7.0, 1 / 7.0}, h = 0;
  for (double q : p) h -= q * std::log(q);
  EXPECT_NEAR(s.erank, std::exp(h), 1e-6);
  EXPECT_NEAR(s.norm_a, std::sqrt(3.0), 1e-6);
  EXPECT_NEAR(s.norm_b, std::sqrt(84.0), 1e-6);
  EXPECT_EQ(s.maxabs, 8.0);
  m.a.at(0, 4) = INFINITY;
  Spectra bad = module_spectra(m);
  EXPECT_EQ(bad.nonfinite, 1);
  EXPECT_TRUE(bad.sigma.empty());
}

}  // namespace
}  // namespace lowrank
