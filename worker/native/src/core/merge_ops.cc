// Stack operators of PEFT's merge_utils, written to give the same numbers: fp32
// arithmetic in the same order, PEFT's int(d·n) and a deterministic tie rule.
#include "lowrank/merge_ops.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "lowrank/error.h"
#include "lowrank/rng.h"

namespace lowrank {

// t [n] -> mask [n] with exactly int(density · n) ones (all ones for density >= 1).
int64_t magnitude_keep(double density, int64_t n) {
  return density >= 1.0 ? n : static_cast<int64_t>(density * static_cast<double>(n));
}

std::vector<uint8_t> magnitude_mask(const float* t, int64_t n, double density) {
  std::vector<uint8_t> mask(static_cast<size_t>(n), 0);
  if (density >= 1.0) {
    std::fill(mask.begin(), mask.end(), 1);
    return mask;
  }
  int64_t k = magnitude_keep(density, n);
  if (k <= 0) return mask;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto before = [t](int64_t x, int64_t y) {
    float ax = std::fabs(t[x]), ay = std::fabs(t[y]);
    return ax > ay || (ax == ay && x < y);
  };
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), before);
  for (int64_t j = 0; j < k; j++) mask[static_cast<size_t>(idx[static_cast<size_t>(j)])] = 1;
  return mask;
}

std::vector<uint8_t> dare_mask(uint64_t seed, uint64_t stream, int64_t n, double density) {
  std::vector<float> u(static_cast<size_t>(n));
  philox_fill_uniform(seed, stream, 0, n, u.data());
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; j++) mask[static_cast<size_t>(j)] = static_cast<double>(u[static_cast<size_t>(j)]) < density;
  return mask;
}

uint64_t dare_stream(const std::string& module, const std::string& tensor, int64_t input) {
  return stream_id("dare:" + module + ":" + tensor + ":" + std::to_string(input));
}

void apply_mask(Matrix* t, const std::vector<uint8_t>& mask) {
  for (size_t j = 0; j < t->data.size(); j++)
    if (!mask[j]) t->data[j] = 0.0f;
}

// PEFT: (t * mask) / density, the density rounded to fp32 as torch does for a scalar.
void apply_dare(Matrix* t, const std::vector<uint8_t>& mask, double density) {
  if (density >= 1.0) return;
  float d = static_cast<float>(density);
  for (size_t j = 0; j < t->data.size(); j++) t->data[j] = mask[j] ? t->data[j] / d : 0.0f;
}

// N x [rows, cols] -> [rows, cols].
Matrix weighted_sum(const std::vector<Matrix>& stack, const std::vector<float>& weights) {
  Matrix out(stack.at(0).rows, stack.at(0).cols);
  for (size_t i = 0; i < stack.size(); i++) {
    const float w = weights[i];
    const float* src = stack[i].ptr();
    float* dst = out.ptr();
    for (size_t j = 0; j < out.data.size(); j++) dst[j] += src[j] * w;
  }
  return out;
}

// N x [rows, cols] (pruned) -> [rows, cols].
Matrix ties_merge(const std::vector<Matrix>& stack, const std::vector<float>& weights, SignMethod method) {
  Matrix out(stack.at(0).rows, stack.at(0).cols);
  size_t n = out.data.size();
  for (size_t j = 0; j < n; j++) {
    float elect = 0.0f;
    for (const Matrix& t : stack) {
      float v = t.data[j];
      elect += method == SignMethod::kTotal ? v : static_cast<float>((v > 0) - (v < 0));
    }
    float majority = elect >= 0.0f ? 1.0f : -1.0f;
    float sum = 0.0f, count = 0.0f;
    for (size_t i = 0; i < stack.size(); i++) {
      float v = stack[i].data[j];
      float sign = static_cast<float>((v > 0) - (v < 0));
      if (sign != majority) continue;
      sum += v * weights[i];
      count += 1.0f;
    }
    out.data[j] = sum / std::max(count, 1.0f);
  }
  return out;
}

namespace {

DenseMergeProvider& provider_slot() {
  static DenseMergeProvider f;
  return f;
}

}  // namespace

void set_dense_merge_provider(DenseMergeProvider f) { provider_slot() = std::move(f); }
const DenseMergeProvider& dense_merge_provider() { return provider_slot(); }

// Sorted x, position q (n - 1), linear interpolation (torch.quantile's default).
float quantile(std::vector<float> x, double q) {
  if (x.empty()) throw Error("invalid_argument", "quantile of an empty tensor");
  if (!(q >= 0.0 && q <= 1.0)) throw Error("invalid_argument", "quantile q must be in [0, 1]");
  std::sort(x.begin(), x.end());
  double pos = q * static_cast<double>(x.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, x.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return static_cast<float>(x[lo] + (static_cast<double>(x[hi]) - x[lo]) * frac);
}

}  // namespace lowrank
