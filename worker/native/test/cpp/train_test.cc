// Building blocks of the training engine: the pool's partition, the pool-parallel GEMM
// (one BLAS call's result to the last bits; identical run to run), RoPE's inverse, the schedules.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

#include "../../src/train/config.h"
#include "../../src/train/generate_loop.h"
#include "../../src/train/optim.h"
#include "../../src/train/parallel.h"
#include "../../src/train/rope.h"
#include "lowrank/linalg.h"
#include "lowrank/error.h"
#include "lowrank/rng.h"

namespace lowrank::train {
namespace {

TEST(TrainParallel, EveryIndexOnceInContiguousChunks) {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (int64_t n : {0, 1, 2, 5, 1000}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; i++) hits[static_cast<size_t>(i)]++;
      });
      for (int h : hits) EXPECT_EQ(h, 1);
    }
  }
  set_num_threads(2);
}

TEST(TrainParallel, PgemmMatchesOneGemmAndRepeatsItself) {
  set_num_threads(2);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, n, k] : {std::array<int64_t, 3>{300, 40, 70}, {16, 500, 90}, {128, 128, 64}}) {
        std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n)), c1(static_cast<size_t>(m * n), 1.0f);
        philox_fill_normal(3, 1, 0, m * k, a.data());
        philox_fill_normal(3, 2, 0, k * n, b.data());
        std::vector<float> c2 = c1, c3 = c1;
        const int64_t lda = ta ? m : k, ldb = tb ? k : n;
        gemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 0.25f, c1.data(), n);
        pgemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 0.25f, c2.data(), n);
        pgemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 0.25f, c3.data(), n);
        // BLAS edge tiles round differently from full ones, so a split changes the last
        // bits (METHODS §8.1 GEMM tolerance); a given split (thread count) repeats exactly.
        double d = 0, y = 0;
        for (size_t i = 0; i < c1.size(); i++) {
          d += (static_cast<double>(c2[i]) - c1[i]) * (static_cast<double>(c2[i]) - c1[i]);
          y += static_cast<double>(c1[i]) * c1[i];
        }
        EXPECT_LE(std::sqrt(d / y), 1e-6) << "ta=" << ta << " tb=" << tb << " m=" << m;
        EXPECT_EQ(c2, c3);
      }
}

TEST(TrainRope, InverseUndoesTheRotation) {
  ModelConfig c;
  c.head_dim = 8;
  c.rope.type = "llama3";
  c.rope.theta = 500000;
  c.rope.factor = 8;
  c.rope.original_max_position_embeddings = 16;
  std::vector<float> cos, sin;
  rope_tables(c, 0, 6, &cos, &sin);
  std::vector<float> x(6 * 16), y;
  philox_fill_normal(5, 1, 0, static_cast<int64_t>(x.size()), x.data());
  y = x;
  std::vector<int64_t> pos = {0, 1, 2, 3, 4, 5};
  rope_apply(y.data(), 6, 16, 2, 8, pos.data(), cos.data(), sin.data(), false);
  EXPECT_NE(x, y);
  rope_apply(y.data(), 6, 16, 2, 8, pos.data(), cos.data(), sin.data(), true);
  for (size_t i = 0; i < x.size(); i++) EXPECT_NEAR(x[i], y[i], 1e-6);
}

TEST(TrainSchedule, TransformersWarmupCosineLinear) {
  OptimConfig o;
  o.schedule = "cosine";
  o.warmup_steps = 4;
  o.total_steps = 12;
  EXPECT_EQ(lr_lambda(o, 0), 0.0);
  EXPECT_EQ(lr_lambda(o, 2), 0.5);
  EXPECT_NEAR(lr_lambda(o, 8), 0.5, 1e-15);
  EXPECT_NEAR(lr_lambda(o, 12), 0.0, 1e-15);
  o.schedule = "linear";
  EXPECT_EQ(lr_lambda(o, 10), 0.25);
  o.schedule = "constant";
  EXPECT_EQ(lr_lambda(o, 100), 1.0);
}

TEST(TrainConfig, RefusesUnsupportedRopeNamingTheField) {
  const std::string base =
      R"({"model_type":"llama","vocab_size":8,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,)";
  EXPECT_NO_THROW(parse_config(base + R"("rope_theta":10000})", "c"));
  try {
    parse_config(base + R"("rope_scaling":{"type":"dynamic","factor":2}})", "c");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "invalid_config");
    EXPECT_NE(std::string(e.what()).find("rope_scaling.rope_type"), std::string::npos) << e.what();
  }
}


// choose_token's top-p set is built by partial selection; the reference sorts everything
// (std::stable_sort, the previous implementation): the same token for every draw.
int32_t choose_full_sort(const float* logits, int64_t V, const SampleOptions& o, float u) {
  if (o.temperature <= 0) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<double> p(static_cast<size_t>(V));
  double mx = -INFINITY;
  for (int64_t j = 0; j < V; j++) mx = std::max(mx, static_cast<double>(logits[j]) / o.temperature);
  double sum = 0;
  for (int64_t j = 0; j < V; j++) sum += p[static_cast<size_t>(j)] = std::exp(static_cast<double>(logits[j]) / o.temperature - mx);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
  size_t keep = 0;
  double mass = 0;
  while (keep < order.size()) {
    mass += p[static_cast<size_t>(order[keep])] / sum;
    keep++;
    if (mass >= o.top_p) break;
  }
  double target = static_cast<double>(u) * mass * sum, acc = 0;
  for (size_t i = 0; i < keep; i++) {
    acc += p[static_cast<size_t>(order[i])];
    if (target < acc) return order[i];
  }
  return order[keep - 1];
}

TEST(TrainSampling, PartialSelectionChoosesTheFullSortsToken) {
  int64_t draws = 0, beyond_first_round = 0;
  for (int64_t V : {7, 300, 5000, 70000})
    for (double scale : {0.5, 4.0, 20.0})  // flat to peaked distributions
      for (bool ties : {false, true}) {
        std::vector<float> logits(static_cast<size_t>(V));
        philox_fill_normal(7, static_cast<uint64_t>(V), 0, V, logits.data());
        for (float& x : logits) x = ties ? std::round(x * 2.0f) * static_cast<float>(scale) / 2.0f : x * static_cast<float>(scale);
        for (double top_p : {1e-9, 0.3, 0.9, 0.99, 1.0})
          for (double temperature : {0.0, 0.7, 1.5})
            for (int draw = 0; draw < 6; draw++) {
              SampleOptions o;
              o.temperature = temperature;
              o.top_p = top_p;
              const float u = philox_uniform(3, static_cast<uint64_t>(V), static_cast<uint64_t>(draw));
              EXPECT_EQ(choose_token(logits.data(), V, o, u), choose_full_sort(logits.data(), V, o, u))
                  << "V " << V << " scale " << scale << " ties " << ties << " top_p " << top_p << " T " << temperature;
              draws++;
              beyond_first_round += V > 256 && top_p >= 0.99 && temperature > 0;
            }
      }
  EXPECT_GT(beyond_first_round, 0);  // the rounds past the first 256 entries were exercised
  EXPECT_EQ(draws, 4 * 3 * 2 * 5 * 3 * 6);
}

}  // namespace
}  // namespace lowrank::train
