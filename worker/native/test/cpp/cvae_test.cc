// The ICM-LoRA generator's CVAE (src/generate/cvae.h): analytic gradients against central
// finite differences of the f32 loss (the loss is summed in double; step 1e-3, tolerance
// 1e-2 relative to the largest gradient of the tensor plus 1e-4), training deterministic
// for a seed whatever the chunking of steps, and sizes checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../../src/generate/cvae.h"
#include "lowrank/error.h"
#include "lowrank/rng.h"

namespace lowrank::generate {
namespace {

std::vector<float> normals(uint64_t stream, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  philox_fill_normal(77, stream, 0, n, v.data());
  return v;
}

TEST(Cvae, GradientsMatchFiniteDifferences) {
  const CvaeDims d{24, 5, 10, 3};
  const int64_t n = 3;
  CvaeParams p = cvae_init(d, 2);
  const auto x = normals(1, n * d.input), c = normals(2, n * d.cond), eps = normals(3, n * d.latent);
  CvaeParams g;
  cvae_forward_backward(d, p, n, x.data(), c.data(), eps.data(), 0.5, &g);
  for (int i = 0; i < 8; i++) {
    std::vector<float>& w = *p.at(i);
    const std::vector<float>& gi = *g.at(i);
    float gmax = 0;
    for (float v : gi) gmax = std::max(gmax, std::abs(v));
    for (size_t k = 0; k < w.size(); k += std::max<size_t>(1, w.size() / 7)) {
      const float saved = w[k];
      const float h = 1e-3f;
      w[k] = saved + h;
      const double up = cvae_forward_backward(d, p, n, x.data(), c.data(), eps.data(), 0.5, nullptr).total;
      w[k] = saved - h;
      const double down = cvae_forward_backward(d, p, n, x.data(), c.data(), eps.data(), 0.5, nullptr).total;
      w[k] = saved;
      const double fd = (up - down) / (2 * h);
      EXPECT_NEAR(gi[k], fd, 1e-2 * gmax + 1e-4) << kCvaeParamNames[i] << "[" << k << "]";
    }
  }
}

TEST(Cvae, TrainingIsDeterministicAndChunkingDoesNotMatter) {
  const CvaeDims d{32, 4, 8, 2};
  const int64_t n = 4;
  const auto x = normals(4, n * d.input), c = normals(5, n * d.cond);
  AdamWOptions o;
  o.lr = 3e-3;
  auto run = [&](std::vector<int64_t> chunks) {
    CvaeParams p = cvae_init(d, 9);
    AdamWState s;
    std::vector<CvaeLoss> all;
    for (int64_t k : chunks) {
      auto l = cvae_train(d, &p, &s, n, x.data(), c.data(), 0.005, o, 50, k, 6);
      all.insert(all.end(), l.begin(), l.end());
    }
    EXPECT_EQ(s.step, 50);
    EXPECT_EQ(all.size(), 50u);
    EXPECT_LT(all.back().mse, all.front().mse);
    return p;
  };
  CvaeParams a = run({50}), b = run({7, 13, 100});
  for (int i = 0; i < 8; i++) EXPECT_EQ(*a.at(i), *b.at(i)) << kCvaeParamNames[i];
}

TEST(Cvae, WrongSizesAreRefused) {
  const CvaeDims d{16, 2, 4, 2};
  CvaeParams p = cvae_init(d, 1);
  p.w4.pop_back();
  std::vector<float> z(2), c(2), out(16);
  EXPECT_THROW(cvae_decode(d, p, 1, z.data(), c.data(), out.data()), Error);
  EXPECT_THROW(cvae_init(CvaeDims{0, 1, 1, 1}, 1), Error);
}

}  // namespace
}  // namespace lowrank::generate
