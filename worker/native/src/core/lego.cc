// LoRA-LEGO rank-wise clustering (METHODS §2.5, §7 P11): canonicalised units, k-means++
// seeding from Philox(seed, "kmeans:<module>"), Lloyd until the assignment is stable.
#include "lowrank/lego.h"

#include <algorithm>
#include <cmath>

#include "lowrank/error.h"
#include "lowrank/rng.h"

namespace lowrank {

namespace {

[[noreturn]] void bad(const std::string& msg) { throw Error("invalid_argument", msg); }

double dot(const double* x, const double* y, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; i++) s += x[i] * y[i];
  return s;
}

}  // namespace

LegoResult lego_merge(const std::vector<LoraModule>& inputs, const std::vector<double>& weights, const LegoOptions& o) {
  if (inputs.empty()) bad("lego merge of module " + o.module + ": no inputs");
  if (weights.size() != inputs.size()) bad("lego merge of module " + o.module + ": one weight per input is needed");
  const int64_t out = inputs[0].out, in = inputs[0].in, dim = out + in;
  int64_t units = 0, rmax = 0;
  for (size_t i = 0; i < inputs.size(); i++) {
    check_module(inputs[i], "lego input " + std::to_string(i));
    if (inputs[i].out != out || inputs[i].in != in) bad("lego merge of module " + o.module + ": inputs have different shapes");
    units += inputs[i].r;
    rmax = std::max(rmax, inputs[i].r);
  }
  const int64_t k = std::min(o.k > 0 ? o.k : rmax, units);
  if (k < 1) bad("lego merge of module " + o.module + ": no rank-1 units to cluster");

  // Units [b; a] with c folded, balanced ‖b‖ = ‖a‖, sign fixed by a's largest entry.
  std::vector<double> x(static_cast<size_t>(units * dim));
  int64_t u = 0;
  for (size_t i = 0; i < inputs.size(); i++) {
    const LoraModule& m = inputs[i];
    const double c = weights[i] * m.scale;
    const double root = std::sqrt(std::fabs(c)), sgn = c < 0 ? -1.0 : 1.0;
    for (int64_t j = 0; j < m.r; j++, u++) {
      double* p = &x[static_cast<size_t>(u * dim)];
      double nb = 0, na = 0;
      for (int64_t row = 0; row < out; row++) nb += std::pow(p[row] = root * m.b.at(row, j), 2);
      for (int64_t col = 0; col < in; col++) na += std::pow(p[out + col] = sgn * root * m.a.at(j, col), 2);
      if (nb > 0 && na > 0) {
        const double f = std::sqrt(std::sqrt(na) / std::sqrt(nb));
        for (int64_t row = 0; row < out; row++) p[row] *= f;
        for (int64_t col = 0; col < in; col++) p[out + col] /= f;
      }
      int64_t best = 0;
      for (int64_t col = 1; col < in; col++)
        if (std::fabs(p[out + col]) > std::fabs(p[out + best])) best = col;
      if (p[out + best] < 0)
        for (int64_t d = 0; d < dim; d++) p[d] = -p[d];
    }
  }
  std::vector<double> norms(static_cast<size_t>(units));
  for (int64_t p = 0; p < units; p++) norms[static_cast<size_t>(p)] = std::sqrt(dot(&x[static_cast<size_t>(p * dim)], &x[static_cast<size_t>(p * dim)], dim));

  std::vector<double> centers(static_cast<size_t>(k * dim));
  auto distance = [&](int64_t p, const double* c) {
    const double* xp = &x[static_cast<size_t>(p * dim)];
    if (o.cosine) {
      const double nc = std::sqrt(dot(c, c, dim)), np = norms[static_cast<size_t>(p)];
      if (nc == 0 || np == 0) return 1.0;
      return 1.0 - dot(xp, c, dim) / (nc * np);
    }
    double s = 0;
    for (int64_t d = 0; d < dim; d++) s += (xp[d] - c[d]) * (xp[d] - c[d]);
    return std::sqrt(s);
  };
  // k-means++: first center uniform, then ∝ D² (lowest unchosen index if all D² = 0).
  const uint64_t stream = stream_id("kmeans:" + o.module);
  std::vector<uint8_t> chosen(static_cast<size_t>(units), 0);
  std::vector<double> d2(static_cast<size_t>(units), INFINITY);
  for (int64_t c = 0; c < k; c++) {
    int64_t pick = 0;
    if (c == 0) {
      pick = std::min<int64_t>(units - 1, static_cast<int64_t>(philox_uniform(o.seed, stream, 0) * static_cast<double>(units)));
    } else {
      double total = 0;
      for (int64_t p = 0; p < units; p++) total += chosen[static_cast<size_t>(p)] ? 0.0 : d2[static_cast<size_t>(p)];
      pick = -1;
      if (total > 0) {
        double target = philox_uniform(o.seed, stream, static_cast<uint64_t>(c)) * total, acc = 0;
        for (int64_t p = 0; p < units; p++) {
          if (chosen[static_cast<size_t>(p)]) continue;
          acc += d2[static_cast<size_t>(p)];
          if (acc > target && d2[static_cast<size_t>(p)] > 0) {
            pick = p;
            break;
          }
        }
        if (pick < 0)
          for (int64_t p = units - 1; p >= 0; p--)
            if (!chosen[static_cast<size_t>(p)] && d2[static_cast<size_t>(p)] > 0) {
              pick = p;
              break;
            }
      }
      if (pick < 0)
        for (int64_t p = 0; p < units; p++)
          if (!chosen[static_cast<size_t>(p)]) {
            pick = p;
            break;
          }
    }
    pick = std::clamp<int64_t>(pick, 0, units - 1);
    chosen[static_cast<size_t>(pick)] = 1;
    std::copy_n(&x[static_cast<size_t>(pick * dim)], dim, &centers[static_cast<size_t>(c * dim)]);
    for (int64_t p = 0; p < units; p++) {
      double d = distance(p, &centers[static_cast<size_t>(c * dim)]);
      d2[static_cast<size_t>(p)] = std::min(d2[static_cast<size_t>(p)], d * d);
    }
  }

  LegoResult r;
  r.assignment.assign(static_cast<size_t>(units), -1);
  std::vector<double> dist(static_cast<size_t>(units));
  for (int it = 0; it < std::max(1, o.max_iterations); it++) {
    bool changed = false;
    for (int64_t p = 0; p < units; p++) {
      int64_t best = 0;
      double bd = INFINITY;
      for (int64_t c = 0; c < k; c++) {
        double d = distance(p, &centers[static_cast<size_t>(c * dim)]);
        if (d < bd) {
          bd = d;
          best = c;
        }
      }
      dist[static_cast<size_t>(p)] = bd;
      if (r.assignment[static_cast<size_t>(p)] != best) changed = true;
      r.assignment[static_cast<size_t>(p)] = best;
    }
    r.iterations = it + 1;
    // Empty clusters take the unit farthest from its center (from a cluster with > 1 member).
    r.sizes.assign(static_cast<size_t>(k), 0);
    for (int64_t a : r.assignment) r.sizes[static_cast<size_t>(a)]++;
    for (int64_t c = 0; c < k; c++) {
      if (r.sizes[static_cast<size_t>(c)] > 0) continue;
      int64_t far = -1;
      for (int64_t p = 0; p < units; p++)
        if (r.sizes[static_cast<size_t>(r.assignment[static_cast<size_t>(p)])] > 1 &&
            (far < 0 || dist[static_cast<size_t>(p)] > dist[static_cast<size_t>(far)]))
          far = p;
      if (far < 0) break;
      r.sizes[static_cast<size_t>(r.assignment[static_cast<size_t>(far)])]--;
      r.assignment[static_cast<size_t>(far)] = c;
      r.sizes[static_cast<size_t>(c)] = 1;
      dist[static_cast<size_t>(far)] = 0;
      changed = true;
    }
    std::fill(centers.begin(), centers.end(), 0.0);
    for (int64_t p = 0; p < units; p++) {
      double* c = &centers[static_cast<size_t>(r.assignment[static_cast<size_t>(p)] * dim)];
      for (int64_t d = 0; d < dim; d++) c[d] += x[static_cast<size_t>(p * dim + d)];
    }
    for (int64_t c = 0; c < k; c++)
      for (int64_t d = 0; d < dim; d++) centers[static_cast<size_t>(c * dim + d)] /= static_cast<double>(std::max<int64_t>(1, r.sizes[static_cast<size_t>(c)]));
    if (!changed) break;
  }
  if (o.reweight_parameters) {
    std::vector<double> mean_norm(static_cast<size_t>(k), 0.0);
    for (int64_t p = 0; p < units; p++) mean_norm[static_cast<size_t>(r.assignment[static_cast<size_t>(p)])] += norms[static_cast<size_t>(p)];
    for (int64_t c = 0; c < k; c++) {
      double* cc = &centers[static_cast<size_t>(c * dim)];
      double nc = std::sqrt(dot(cc, cc, dim));
      double target = mean_norm[static_cast<size_t>(c)] / static_cast<double>(std::max<int64_t>(1, r.sizes[static_cast<size_t>(c)]));
      if (nc > 0)
        for (int64_t d = 0; d < dim; d++) cc[d] *= target / nc;
    }
  }
  LoraModule m;
  m.r = k;
  m.in = in;
  m.out = out;
  m.scale = 1.0;
  m.a = Matrix(k, in);
  m.b = Matrix(out, k);
  for (int64_t c = 0; c < k; c++) {
    const double* cc = &centers[static_cast<size_t>(c * dim)];
    for (int64_t row = 0; row < out; row++) m.b.at(row, c) = static_cast<float>(cc[row]);
    for (int64_t col = 0; col < in; col++) m.a.at(c, col) = static_cast<float>(cc[out + col]);
  }
  if (o.reweight_output) {
    double target = 0;
    for (size_t i = 0; i < inputs.size(); i++)
      for (size_t j = 0; j < inputs.size(); j++) target += weights[i] * weights[j] * factored_inner(inputs[i], inputs[j]);
    double have = factored_inner(m, m);
    if (have > 0 && target > 0) {
      r.gamma = std::sqrt(target / have);
      const float f = static_cast<float>(std::sqrt(r.gamma));
      for (float& v : m.a.data) v *= f;
      for (float& v : m.b.data) v *= f;
    }
  }
  r.module = std::move(m);
  return r;
}

}  // namespace lowrank
