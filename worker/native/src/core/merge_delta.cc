// mergekit's generalized task arithmetic and Model Stock (mergekit 0.1.5,
// merge_methods/generalized_task_arithmetic.py, sparsify.py, model_stock.py), written to
// give the same fp32 numbers, plus the dense truncated-SVD re-factoring (METHODS §2.3–2.4).
#include "lowrank/merge_delta.h"

#include <algorithm>
#include <functional>
#include <cmath>
#include <numeric>
#include <utility>

#include "lowrank/error.h"
#include "lowrank/rng.h"

namespace lowrank {

namespace {

[[noreturn]] void bad(const std::string& msg) { throw Error("invalid_argument", msg); }

float sign_of(float v) { return static_cast<float>((v > 0) - (v < 0)); }

// mergekit magnitude(): keep the max(1, int(d·n)) largest |t| (lowest index on ties [ours]).
// The k-th largest |t| is found on a contiguous copy (no index indirection: ~10x faster
// on 7B-shaped tensors), then entries above it are kept and ties filled in index order.
// How many entries magnitude_sparsify keeps: all for d >= 1, none for d <= 0, else max(1, int(d·n)).
int64_t sparsify_keep(double density, int64_t n) {
  if (density >= 1.0) return n;
  if (density <= 0.0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(density * static_cast<double>(n)));
}

void magnitude_sparsify(Matrix* t, double density) {
  const int64_t n = static_cast<int64_t>(t->data.size());
  if (density >= 1.0) return;
  if (density <= 0.0 || n == 0) {
    std::fill(t->data.begin(), t->data.end(), 0.0f);
    return;
  }
  const int64_t k = sparsify_keep(density, n);
  std::vector<float> mag(static_cast<size_t>(n));
  float* d = t->ptr();
  for (int64_t j = 0; j < n; j++) mag[static_cast<size_t>(j)] = std::fabs(d[j]);
  std::nth_element(mag.begin(), mag.begin() + (k - 1), mag.end(), std::greater<float>());
  const float thr = mag[static_cast<size_t>(k - 1)];
  int64_t above = 0;
  for (int64_t j = 0; j < n; j++) above += std::fabs(d[j]) > thr;
  int64_t ties_left = k - above;
  for (int64_t j = 0; j < n; j++) {
    const float a = std::fabs(d[j]);
    if (a > thr) continue;
    if (a == thr && ties_left > 0) {
      ties_left--;
      continue;
    }
    d[j] = 0.0f;
  }
}

// rescaled_masked_tensor(norm = l1): masked · (Σ|t| / Σ|masked|) unless either is < 1e-7.
void masked_l1_rescale(Matrix* t, const std::vector<uint8_t>& mask, bool rescale) {
  double before = 0, after = 0;
  for (size_t j = 0; j < t->data.size(); j++) {
    before += std::fabs(t->data[j]);
    if (!mask[j]) t->data[j] = 0.0f;
    after += std::fabs(t->data[j]);
  }
  if (!rescale || before < 1e-7 || after < 1e-7) return;
  const float ratio = static_cast<float>(before) / static_cast<float>(after);
  for (float& v : t->data) v *= ratio;
}

DeltaMixProvider& delta_mix_provider() {
  static DeltaMixProvider f;
  return f;
}

}  // namespace

void set_delta_mix_provider(DeltaMixProvider f) { delta_mix_provider() = std::move(f); }

namespace {

// The request merge_deltas hands to an installed provider (w: the weights in fp32; wsum: the divisor without ties).
DeltaMixRequest mix_request(const std::vector<Matrix>& deltas, const DeltaMergeOptions& o, bool dare, bool ties,
                            bool normalize, bool rescale, const std::vector<float>& w, float wsum) {
  DeltaMixRequest r;
  r.deltas = &deltas;
  r.trim = o.method == DeltaMethod::kTies;
  r.keep = sparsify_keep(o.density, static_cast<int64_t>(deltas[0].data.size()));
  r.dare = dare;
  r.rescale = rescale;
  r.ties = ties;
  r.normalize = normalize;
  r.density = o.density;
  r.lambda = o.lambda;
  r.sign = o.sign;
  r.seed = o.seed;
  r.masks = o.masks.empty() ? nullptr : &o.masks;
  if (dare)
    for (size_t i = 0; i < deltas.size(); i++) r.streams.push_back(dare_stream(o.module, "mk", static_cast<int64_t>(i)));
  r.weights = w;
  r.weight_sum = wsum;
  return r;
}

}  // namespace

DeltaMethod parse_delta_method(const std::string& name) {
  if (name == "task_arithmetic") return DeltaMethod::kTaskArithmetic;
  if (name == "ties") return DeltaMethod::kTies;
  if (name == "dare_linear") return DeltaMethod::kDareLinear;
  if (name == "dare_ties") return DeltaMethod::kDareTies;
  bad("delta merge method must be task_arithmetic, ties, dare_linear or dare_ties; got '" + name + "'");
}

Matrix merge_deltas(std::vector<Matrix> deltas, const DeltaMergeOptions& o) {
  const size_t n_in = deltas.size();
  if (n_in == 0) bad("delta merge of module " + o.module + ": no inputs");
  if (o.weights.size() != n_in) bad("delta merge of module " + o.module + ": one weight per input is needed");
  const bool dare = o.method == DeltaMethod::kDareLinear || o.method == DeltaMethod::kDareTies;
  const bool ties = o.method == DeltaMethod::kTies || o.method == DeltaMethod::kDareTies;
  if (o.method != DeltaMethod::kTaskArithmetic && !(o.density >= 0.0 && o.density <= 1.0))
    bad("delta merge of module " + o.module + ": density must be in [0, 1]");
  if (dare && !(o.density > 0.0)) bad("delta merge of module " + o.module + ": DARE needs density > 0");
  if (!o.masks.empty() && o.masks.size() != n_in) bad("delta merge: give one DARE mask per input or none");
  const bool normalize = o.normalize < 0 ? o.method == DeltaMethod::kTies : o.normalize == 1;
  const bool rescale = o.rescale < 0 ? dare : o.rescale == 1;
  const int64_t rows = deltas[0].rows, cols = deltas[0].cols;
  const size_t n = deltas[0].data.size();
  for (size_t i = 0; i < n_in; i++) {
    if (deltas[i].rows != rows || deltas[i].cols != cols)
      bad("delta merge of module " + o.module + ": input " + std::to_string(i) + " has another shape than input 0");
    if (!o.masks.empty() && o.masks[i].size() != n)
      bad("delta merge of module " + o.module + ": DARE mask " + std::to_string(i) + " has the wrong size");
  }
  std::vector<float> w(n_in);
  float wsum = 0.0f;
  for (size_t i = 0; i < n_in; i++) wsum += w[i] = static_cast<float>(o.weights[i]);
  if (std::fabs(wsum) < 1e-8f) wsum = 1.0f;
  if (const DeltaMixProvider& provider = delta_mix_provider()) {
    Matrix mix;
    if (provider(mix_request(deltas, o, dare, ties, normalize, rescale, w, wsum), &mix)) return mix;
  }

  std::vector<Matrix> stack;
  stack.reserve(n_in);
  for (size_t i = 0; i < n_in; i++) {
    Matrix t = std::move(deltas[i]);  // sparsified and weighted in place
    if (o.method == DeltaMethod::kTies) {
      magnitude_sparsify(&t, o.density);
    } else if (dare && o.density < 1.0) {
      std::vector<uint8_t> mask = o.masks.empty()
                                      ? dare_mask(o.seed, dare_stream(o.module, "mk", static_cast<int64_t>(i)),
                                                  static_cast<int64_t>(n), o.density)
                                      : o.masks[i];
      masked_l1_rescale(&t, mask, rescale);
    }
    for (float& v : t.data) v *= w[i];
    stack.push_back(std::move(t));
  }

  Matrix mix(rows, cols);
  float* out = mix.ptr();
  for (size_t j = 0; j < n; j++) {
    float sum = 0.0f, divisor = 0.0f;
    if (ties) {
      float elect = 0.0f;
      for (size_t i = 0; i < n_in; i++) {
        float v = stack[i].data[j];
        elect += o.sign == SignMethod::kTotal ? v : sign_of(v);
      }
      const float majority = elect >= 0.0f ? 1.0f : -1.0f;
      for (size_t i = 0; i < n_in; i++) {
        float v = stack[i].data[j];
        if (sign_of(v) != majority) continue;
        sum += v;
        divisor += w[i];
      }
      if (divisor == 0.0f) divisor = 1.0f;
    } else {
      for (size_t i = 0; i < n_in; i++) sum += stack[i].data[j];
      divisor = wsum;
    }
    if (normalize) sum /= divisor;
    if (o.lambda != 1.0) sum *= static_cast<float>(o.lambda);
    out[j] = sum;
  }
  return mix;
}

int64_t energy_cutoff(const std::vector<float>& sigma, double tau) {
  std::vector<float> cs(sigma.size());
  double acc = 0;
  for (size_t i = 0; i < sigma.size(); i++) {
    acc += static_cast<double>(sigma[i] * sigma[i]);
    cs[i] = static_cast<float>(acc);
  }
  if (cs.empty()) return 0;
  const float cutoff = static_cast<float>(tau * static_cast<double>(cs.back()));
  for (size_t i = 0; i < cs.size(); i++)
    if (cs[i] >= cutoff) return static_cast<int64_t>(i) + 1;
  return static_cast<int64_t>(sigma.size());
}

DenseFactorResult factor_dense(const Matrix& m, const DenseFactorOptions& o) {
  const RankChoice& c = o.choice;
  if (c.rank < 0 || c.max_rank < 0) bad("rank and maxRank must be >= 0");
  if (c.rank == 0 && !(c.energy > 0.0 && c.energy <= 1.0)) bad("give a rank >= 1 or an energy threshold in (0, 1]");
  if (o.randomized && c.rank == 0) bad("the randomized SVD needs a fixed rank (the energy rule needs every singular value: use the exact SVD)");
  double total = 0;
  for (float v : m.data) total += static_cast<double>(v) * v;
  Svd svd;
  if (o.randomized) {
    RandomizedSvdOptions ro;
    ro.rank = std::min(c.max_rank > 0 ? std::min(c.rank, c.max_rank) : c.rank, std::min(m.rows, m.cols));
    ro.oversample = o.oversample;
    ro.niter = o.niter;
    ro.seed = o.seed;
    ro.stream = o.stream;
    svd = randomized_svd(backend_dense_operator(m), ro);
  } else {
    svd = svd_thin_f64(m);
  }
  int64_t k = c.rank > 0 ? c.rank : energy_cutoff(svd.s, c.energy);
  if (c.max_rank > 0) k = std::min(k, c.max_rank);
  k = std::max<int64_t>(1, std::min<int64_t>(k, static_cast<int64_t>(svd.s.size())));
  DenseFactorResult r;
  r.module = refactor(svd, k, 1.0, o.split);
  r.sigma = svd.s;
  double kept = 0;
  for (int64_t i = 0; i < k; i++) kept += static_cast<double>(svd.s[static_cast<size_t>(i)]) * svd.s[static_cast<size_t>(i)];
  r.retained_energy = total > 0 ? std::min(1.0, kept / total) : 1.0;
  r.rel_error = std::sqrt(std::max(0.0, 1.0 - r.retained_energy));
  return r;
}

ModelStockResult model_stock(const std::vector<LoraModule>& inputs, bool filter_wise) {
  const size_t n = inputs.size();
  if (n < 2) bad("model_stock needs at least 2 inputs for a module (the angle between fine-tunes)");
  const int64_t out = inputs[0].out, in = inputs[0].in;
  int64_t rtot = 0;
  for (size_t i = 0; i < n; i++) {
    check_module(inputs[i], "model_stock input " + std::to_string(i));
    if (inputs[i].out != out || inputs[i].in != in) bad("model_stock: inputs have different module shapes");
    rtot += inputs[i].r;
  }
  const int64_t groups = filter_wise ? out : 1;
  std::vector<double> cos(static_cast<size_t>(groups), 0.0);
  auto pair_inner = [&](size_t i, size_t j) -> std::vector<double> {
    const LoraModule& x = inputs[i];
    const LoraModule& y = inputs[j];
    std::vector<double> res(static_cast<size_t>(groups), 0.0);
    if (!filter_wise) {
      res[0] = factored_inner(x, y);
      return res;
    }
    Matrix g = matmul(x.a, false, y.a, true);  // [r_x, r_y]
    Matrix bg = matmul(x.b, false, g, false);  // [out, r_y]
    for (int64_t row = 0; row < out; row++) {
      double s = 0;
      for (int64_t p = 0; p < y.r; p++) s += static_cast<double>(bg.at(row, p)) * y.b.at(row, p);
      res[static_cast<size_t>(row)] = s * x.scale * y.scale;
    }
    return res;
  };
  std::vector<std::vector<double>> self(n);
  for (size_t i = 0; i < n; i++) self[i] = pair_inner(i, i);
  size_t pairs = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++, pairs++) {
      std::vector<double> ip = pair_inner(i, j);
      for (int64_t g = 0; g < groups; g++) {
        double np = std::sqrt(std::max(0.0, self[i][static_cast<size_t>(g)])) * std::sqrt(std::max(0.0, self[j][static_cast<size_t>(g)]));
        cos[static_cast<size_t>(g)] += std::clamp(ip[static_cast<size_t>(g)] / std::max(np, 1e-6), -1.0, 1.0);
      }
    }
  ModelStockResult r;
  r.cos.resize(static_cast<size_t>(groups));
  r.t.resize(static_cast<size_t>(groups));
  const double nn = static_cast<double>(n);
  for (int64_t g = 0; g < groups; g++) {
    double c = cos[static_cast<size_t>(g)] / static_cast<double>(pairs);
    double den = 1.0 + (nn - 1.0) * c;
    double t = nn * c / den;
    // [ours] cos θ <= 0 (or mergekit's singular denominator): keep the base, t = 0.
    if (c <= 0.0 || std::fabs(den) < 1e-6) {
      t = 0.0;
      r.clamped++;
    }
    r.cos[static_cast<size_t>(g)] = c;
    r.t[static_cast<size_t>(g)] = std::min(t, 1.0);
  }
  LoraModule m;
  m.r = rtot;
  m.in = in;
  m.out = out;
  m.scale = 1.0;
  m.a = Matrix(rtot, in);
  m.b = Matrix(out, rtot);
  int64_t off = 0;
  for (const LoraModule& x : inputs) {
    std::copy(x.a.data.begin(), x.a.data.end(), m.a.data.begin() + off * in);
    for (int64_t row = 0; row < out; row++) {
      const double f = x.scale * r.t[static_cast<size_t>(filter_wise ? row : 0)] / nn;
      for (int64_t p = 0; p < x.r; p++) m.b.at(row, off + p) = static_cast<float>(x.b.at(row, p) * f);
    }
    off += x.r;
  }
  r.module = std::move(m);
  return r;
}

}  // namespace lowrank
