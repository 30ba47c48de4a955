// RoPE tables and rotation (see rope.h).
#include "rope.h"

#include <cmath>

#include "parallel.h"

namespace lowrank::train {

namespace {

// transformers' _compute_default_rope_parameters: 1 / base^(arange(0, dim, 2) / dim) in fp32,
// then _compute_llama3_parameters / linear scaling on top.
std::vector<float> inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> f(static_cast<size_t>(half));
  const float base = static_cast<float>(c.rope.theta), dim = static_cast<float>(c.head_dim);
  for (int64_t i = 0; i < half; i++) f[static_cast<size_t>(i)] = 1.0f / std::pow(base, static_cast<float>(2 * i) / dim);
  if (c.rope.type == "linear") {
    for (float& x : f) x = x / static_cast<float>(c.rope.factor);
  } else if (c.rope.type == "llama3") {
    const double factor = c.rope.factor, lo = c.rope.low_freq_factor, hi = c.rope.high_freq_factor;
    const double old_len = c.rope.original_max_position_embeddings;
    const double lo_wavelen = old_len / lo, hi_wavelen = old_len / hi;
    const auto ff = static_cast<float>(factor);
    for (float& x : f) {
      const float wavelen = static_cast<float>(2 * M_PI) / x;
      const float scaled = wavelen > static_cast<float>(lo_wavelen) ? x / ff : x;
      const bool medium = !(wavelen < static_cast<float>(hi_wavelen)) && !(wavelen > static_cast<float>(lo_wavelen));
      if (medium) {
        const float smooth = (static_cast<float>(old_len) / wavelen - static_cast<float>(lo)) / static_cast<float>(hi - lo);
        x = (1.0f - smooth) * scaled / ff + smooth * scaled;
      } else {
        x = scaled;
      }
    }
  }
  return f;
}

}  // namespace

void rope_tables(const ModelConfig& cfg, int64_t first, int64_t count, std::vector<float>* cos, std::vector<float>* sin) {
  const std::vector<float> f = inv_freq(cfg);
  const auto half = static_cast<int64_t>(f.size());
  cos->resize(static_cast<size_t>(count * half));
  sin->resize(static_cast<size_t>(count * half));
  for (int64_t t = 0; t < count; t++) {
    for (int64_t i = 0; i < half; i++) {
      // fp32 angle as torch's (inv_freq @ position) in fp32, cos/sin rounded once.
      const float angle = static_cast<float>(first + t) * f[static_cast<size_t>(i)];
      (*cos)[static_cast<size_t>(t * half + i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
      (*sin)[static_cast<size_t>(t * half + i)] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

void rope_apply(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* pos, const float* cos,
                const float* sin, bool inverse) {
  const int64_t half = head_dim / 2;
  parallel_for(n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* c = cos + pos[r] * half;
      const float* s = sin + pos[r] * half;
      for (int64_t h = 0; h < heads; h++) {
        float* v = x + r * ld + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
          const float x1 = v[i], x2 = v[i + half];
          if (!inverse) {
            // q·cos + rotate_half(q)·sin, rotate_half = [−x2, x1]
            v[i] = x1 * c[i] - x2 * s[i];
            v[i + half] = x2 * c[i] + x1 * s[i];
          } else {
            v[i] = x1 * c[i] + x2 * s[i];
            v[i + half] = x2 * c[i] - x1 * s[i];
          }
        }
      }
    }
  });
}

}  // namespace lowrank::train
