// Merge operators and add_weighted_adapter semantics on hand-sized cases; the parity
// against PEFT itself lives in worker/test/merge-parity.test.ts.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>

#include "lowrank/error.h"
#include "lowrank/merge.h"
#include "lowrank/rng.h"

namespace lowrank {
namespace {

Matrix from(int64_t rows, int64_t cols, std::vector<float> v) {
  Matrix m(rows, cols);
  m.data = std::move(v);
  return m;
}

LoraModule random_module(int64_t r, int64_t in, int64_t out, double scale, uint64_t stream) {
  LoraModule m;
  m.r = r;
  m.in = in;
  m.out = out;
  m.scale = scale;
  m.a = Matrix(r, in);
  m.b = Matrix(out, r);
  philox_fill_normal(99, stream, 0, r * in, m.a.ptr());
  philox_fill_normal(99, stream + 1, 0, out * r, m.b.ptr());
  return m;
}

Matrix scaled_delta(const LoraModule& m) { return delta_weight(m); }

TEST(MagnitudeMask, KeepsIntOfDensityTimesNWithLowestIndexTies) {
  std::vector<float> t = {1, -3, 2, 3, -2, 0.5f, 3, 1, 1, 1};
  // int(0.29 · 10) = 2: the two largest |t| are 3 at indices 1, 3, 6: lowest two win
  std::vector<uint8_t> m = magnitude_mask(t.data(), 10, 0.29);
  EXPECT_EQ(m, (std::vector<uint8_t>{0, 1, 0, 1, 0, 0, 0, 0, 0, 0}));
  // int(0.29 · 100) = 28 (the double product is 28.999...)
  std::vector<float> big(100);
  for (int i = 0; i < 100; i++) big[static_cast<size_t>(i)] = static_cast<float>(i);
  std::vector<uint8_t> mb = magnitude_mask(big.data(), 100, 0.29);
  int kept = 0;
  for (uint8_t x : mb) kept += x;
  EXPECT_EQ(kept, 28);
  EXPECT_EQ(mb[72], 1);
  EXPECT_EQ(mb[71], 0);
  std::vector<uint8_t> all = magnitude_mask(t.data(), 10, 1.0);
  for (uint8_t x : all) EXPECT_EQ(x, 1);
}

TEST(Ties, ElectsOnUnweightedStackAndDividesByCount) {
  std::vector<Matrix> stack = {from(1, 3, {1, -2, 0}), from(1, 3, {-3, -1, 4}), from(1, 3, {1, 5, -1})};
  std::vector<float> w = {1, 10, 100};
  // total: sums (-1, 2, 3) -> (-, +, +); frequency: (+1, -1, 0) -> (+, -, +)
  Matrix t = ties_merge(stack, w, SignMethod::kTotal);
  EXPECT_FLOAT_EQ(t.data[0], -30.0f);         // only input 1 agrees
  EXPECT_FLOAT_EQ(t.data[1], 500.0f);         // only input 2
  EXPECT_FLOAT_EQ(t.data[2], 40.0f);          // input 1 (input 0 is a zero: never agrees)
  Matrix f = ties_merge(stack, w, SignMethod::kFrequency);
  EXPECT_FLOAT_EQ(f.data[0], (1 + 100) / 2.0f);
  EXPECT_FLOAT_EQ(f.data[1], (-2 - 10) / 2.0f);
  EXPECT_FLOAT_EQ(f.data[2], 40.0f);
}

TEST(Dare, MaskIsSeededAndHasTheRightDensity) {
  uint64_t s = dare_stream("model.layers.0.q_proj", "A", 1);
  std::vector<uint8_t> a = dare_mask(7, s, 100000, 0.3), b = dare_mask(7, s, 100000, 0.3);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, dare_mask(8, s, 100000, 0.3));
  double kept = 0;
  for (uint8_t x : a) kept += x;
  EXPECT_NEAR(kept / 1e5, 0.3, 5 * std::sqrt(0.3 * 0.7 / 1e5));
}

TEST(Quantile, MatchesTorchLinearInterpolation) {
  EXPECT_FLOAT_EQ(quantile({3, 1, 2, 4}, 0.5), 2.5f);
  EXPECT_FLOAT_EQ(quantile({3, 1, 2, 4}, 0.9), 3.7f);
  EXPECT_FLOAT_EQ(quantile({5}, 0.3), 5.0f);
}

std::vector<MergeInput> three_inputs(bool equal_ranks) {
  std::vector<MergeInput> in(3);
  in[0].modules["q"] = random_module(4, 12, 10, 2.0, 1);
  in[1].modules["q"] = random_module(equal_ranks ? 4 : 6, 12, 10, 0.5, 3);
  in[2].modules["q"] = random_module(equal_ranks ? 4 : 2, 12, 10, 1.0 / std::sqrt(4.0), 5);
  in[0].modules["v"] = random_module(4, 12, 8, 2.0, 7);  // only in input 0
  return in;
}

Matrix expected_sum(const std::vector<MergeInput>& in, const std::vector<double>& w, const std::string& name) {
  Matrix acc;
  for (size_t i = 0; i < in.size(); i++) {
    auto it = in[i].modules.find(name);
    if (it == in[i].modules.end()) continue;
    Matrix d = scaled_delta(it->second);
    if (acc.data.empty()) acc = Matrix(d.rows, d.cols);
    for (size_t j = 0; j < d.data.size(); j++) acc.data[j] += static_cast<float>(w[i]) * d.data[j];
  }
  return acc;
}

TEST(Merge, CatIsExactAndFoldsScales) {
  auto in = three_inputs(false);
  MergeOptions o;
  o.combination = Combination::kCat;
  o.weights = {0.7, -1.2, 0.4};
  MergeResult r = merge_adapters(in, o);
  EXPECT_EQ(r.modules.at("q").r, 12);
  EXPECT_EQ(r.modules.at("v").r, 4);
  EXPECT_EQ(r.modules.at("q").scale, 1.0);
  EXPECT_LT(rel_diff(delta_weight(r.modules.at("q")), expected_sum(in, o.weights, "q")), 1e-6);
  EXPECT_LT(rel_diff(delta_weight(r.modules.at("v")), expected_sum(in, o.weights, "v")), 1e-6);
  EXPECT_EQ(r.info.at("v").inputs, (std::vector<int64_t>{0}));
  o.parity = ParityMode::kPeft;
  MergeResult p = merge_adapters(in, o);
  EXPECT_EQ(p.modules.at("q").r, 4 + 6 + 2);  // padded to Σ max r_i
  EXPECT_EQ(p.modules.at("v").r, 12);
}

TEST(Merge, SvdIsTheTruncatedSum) {
  auto in = three_inputs(false);
  MergeOptions o;
  o.combination = Combination::kSvd;
  o.weights = {0.7, -1.2, 0.4};
  o.svd_rank = 12;  // full rank of the sum: exact
  MergeResult r = merge_adapters(in, o);
  EXPECT_LT(rel_diff(delta_weight(r.modules.at("q")), expected_sum(in, o.weights, "q")), 1e-5);
  EXPECT_NEAR(r.info.at("q").retained_energy, 1.0, 1e-6);
  o.svd_rank = 0;  // max r_i = 6 < 12: an optimal rank-6 truncation
  MergeResult t = merge_adapters(in, o);
  EXPECT_EQ(t.modules.at("q").r, 6);
  EXPECT_LT(t.info.at("q").retained_energy, 1.0);
}

TEST(Merge, LinearIsFactorSpaceAndSingleInputIsExact) {
  auto in = three_inputs(true);
  MergeOptions o;
  o.combination = Combination::kLinear;
  o.weights = {0.7, -1.2, 0.4};
  MergeResult r = merge_adapters(in, o);
  // A = Σ sgn(c)√|c| A_i, B = Σ √|c| B_i with c = w s
  const LoraModule& q = r.modules.at("q");
  double c1 = 0.7 * 2.0, c2 = -1.2 * 0.5;
  float expect_a0 = static_cast<float>(std::sqrt(c1) * in[0].modules["q"].a.data[0] -
                                       std::sqrt(-c2) * in[1].modules["q"].a.data[0] +
                                       std::sqrt(0.4 * 0.5) * in[2].modules["q"].a.data[0]);
  EXPECT_NEAR(q.a.data[0], expect_a0, 1e-5);
  std::vector<MergeInput> one = {in[1]};
  o.weights = {-1.2};
  o.combination = Combination::kTies;  // ignored for one input, as in PEFT
  MergeResult s = merge_adapters(one, o);
  EXPECT_EQ(s.combination, Combination::kLinear);
  EXPECT_LT(rel_diff(delta_weight(s.modules.at("q")), expected_sum(one, o.weights, "q")), 1e-6);
}

TEST(Merge, DareWithInjectedMasksEqualsHandComputation) {
  auto in = three_inputs(true);
  MergeOptions o;
  o.combination = Combination::kDareLinearSvd;
  o.weights = {1.0, 1.0, 1.0};
  o.density = 0.5;
  o.svd_rank = 10;
  int64_t n = 10 * 12;
  Matrix expect(10, 12);
  for (int64_t i = 0; i < 3; i++) {
    std::vector<uint8_t> mask(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; j++) mask[static_cast<size_t>(j)] = (j + i) % 3 == 0;
    o.dare_masks[dare_mask_key("q", "delta", i)] = mask;
    Matrix d = delta_weight(in[static_cast<size_t>(i)].modules["q"]);
    for (int64_t j = 0; j < n; j++) expect.data[static_cast<size_t>(j)] += mask[static_cast<size_t>(j)] ? d.data[static_cast<size_t>(j)] / 0.5f : 0;
  }
  MergeResult r = merge_adapters(in, o);
  EXPECT_LT(rel_diff(delta_weight(r.modules.at("q")), expect), 1e-5);
  // the same seed gives the same bytes; another seed another result
  o.dare_masks.clear();
  o.seed = 3;
  MergeResult a = merge_adapters(in, o), b = merge_adapters(in, o);
  EXPECT_EQ(a.modules.at("q").a.data, b.modules.at("q").a.data);
}

TEST(Merge, RandomizedSvdOptionIsNearOptimalAndSeeded) {
  auto in = three_inputs(false);
  MergeOptions o;
  o.combination = Combination::kMagnitudePruneSvd;
  o.weights = {0.7, -1.2, 0.4};
  o.density = 0.9;
  o.svd_rank = 6;
  MergeResult exact = merge_adapters(in, o);
  o.randomized_svd = true;
  o.seed = 11;
  MergeResult a = merge_adapters(in, o), b = merge_adapters(in, o);
  EXPECT_EQ(a.modules.at("q").a.data, b.modules.at("q").a.data);
  // energy kept within 1e-3 of the exact truncation's (a [10, 12] matrix: p = 10 covers it)
  EXPECT_NEAR(a.info.at("q").retained_energy, exact.info.at("q").retained_energy, 1e-3);
  EXPECT_LT(rel_diff(delta_weight(a.modules.at("q")), delta_weight(exact.modules.at("q"))), 1e-4);
}

TEST(Merge, RefusesWithReasons) {
  auto in = three_inputs(false);
  MergeOptions o;
  o.combination = Combination::kLinear;
  o.weights = {1, 1, 1};
  try {
    merge_adapters(in, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "undefined_merge");
    EXPECT_NE(std::string(e.what()).find("equal ranks"), std::string::npos);
  }
  in[1].dora = true;
  o.combination = Combination::kCat;
  EXPECT_THROW(merge_adapters(in, o), Error);
  in[1].dora = false;
  o.combination = Combination::kTiesSvd;
  EXPECT_THROW(merge_adapters(in, o), Error);  // no density
  o.density = 1.5;
  EXPECT_THROW(merge_adapters(in, o), Error);
  o.weights = {1, 1};
  EXPECT_THROW(merge_adapters(in, o), Error);
  EXPECT_THROW(parse_combination("average"), Error);
}

TEST(Merge, PeftModeInheritsRsloraScale) {
  auto in = three_inputs(true);
  in[0].use_rslora = true;
  MergeOptions o;
  o.combination = Combination::kCat;
  o.weights = {1, 1, 1};
  o.parity = ParityMode::kPeft;
  MergeResult r = merge_adapters(in, o);
  EXPECT_TRUE(r.use_rslora);
  EXPECT_NEAR(r.modules.at("q").scale, std::sqrt(12.0), 1e-12);
  o.parity = ParityMode::kIntended;
  EXPECT_FALSE(merge_adapters(in, o).use_rslora);
}

}  // namespace
}  // namespace lowrank
