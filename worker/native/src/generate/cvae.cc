// The CVAE's forward, backward, AdamW and training loop (see cvae.h for the model).
#include "cvae.h"

#include <cblas.h>

#include <cmath>
#include <string>

#include "lowrank/error.h"
#include "lowrank/rng.h"

namespace lowrank::generate {
namespace {

constexpr float kLeak = 0.01f;  // torch.nn.LeakyReLU default slope

// C (m x n) = alpha · op(A) op(B) + beta · C, row-major.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c, float beta_c) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0f, a, ta ? static_cast<int>(m) : static_cast<int>(k), b,
              tb ? static_cast<int>(k) : static_cast<int>(n), beta_c, c, static_cast<int>(n));
}

// y (n x out) = x (n x in) Wᵀ + b
void linear(int64_t n, int64_t in, int64_t out, const float* x, const float* w, const float* b, float* y) {
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < out; j++) y[r * out + j] = b[j];
  gemm(false, true, n, out, in, x, w, y, 1.0f);
}

// dW (out x in) = gᵀ x, db = Σ_rows g
void linear_grads(int64_t n, int64_t in, int64_t out, const float* x, const float* g, float* dw, float* db) {
  gemm(true, false, out, in, n, g, x, dw, 0.0f);
  for (int64_t j = 0; j < out; j++) {
    double s = 0;
    for (int64_t r = 0; r < n; r++) s += g[r * out + j];
    db[j] = static_cast<float>(s);
  }
}

// [a | b] row-wise: out is n x (ka + kb)
void concat(int64_t n, const float* a, int64_t ka, const float* b, int64_t kb, float* out) {
  for (int64_t r = 0; r < n; r++) {
    for (int64_t j = 0; j < ka; j++) out[r * (ka + kb) + j] = a[r * ka + j];
    for (int64_t j = 0; j < kb; j++) out[r * (ka + kb) + ka + j] = b[r * kb + j];
  }
}

void check_dims(const CvaeDims& d) {
  if (d.input <= 0 || d.cond < 0 || d.hidden <= 0 || d.latent <= 0)
    throw Error("invalid_argument", "cvae: input, hidden and latent must be positive, cond non-negative");
}

void check_params(const CvaeDims& d, const CvaeParams& p) {
  CvaeParams& q = const_cast<CvaeParams&>(p);
  for (int i = 0; i < 8; i++)
    if (static_cast<int64_t>(q.at(i)->size()) != cvae_param_size(d, i))
      throw Error("invalid_argument", std::string("cvae: ") + kCvaeParamNames[i] + " has " +
                                          std::to_string(q.at(i)->size()) + " entries, expected " +
                                          std::to_string(cvae_param_size(d, i)));
}

CvaeParams zeros_like(const CvaeDims& d) {
  CvaeParams z;
  for (int i = 0; i < 8; i++) z.at(i)->assign(static_cast<size_t>(cvae_param_size(d, i)), 0.0f);
  return z;
}

}  // namespace

std::vector<float>* CvaeParams::at(int i) {
  switch (i) {
    case 0: return &w1;
    case 1: return &b1;
    case 2: return &w2;
    case 3: return &b2;
    case 4: return &w3;
    case 5: return &b3;
    case 6: return &w4;
    default: return &b4;
  }
}

int64_t cvae_param_size(const CvaeDims& d, int i) {
  switch (i) {
    case 0: return d.hidden * d.input;
    case 1: return d.hidden;
    case 2: return 2 * d.latent * (d.hidden + d.cond);
    case 3: return 2 * d.latent;
    case 4: return d.hidden * (d.latent + d.cond);
    case 5: return d.hidden;
    case 6: return d.input * d.hidden;
    default: return d.input;
  }
}

CvaeParams cvae_init(const CvaeDims& d, uint64_t seed) {
  check_dims(d);
  const int64_t fan_in[4] = {d.input, d.hidden + d.cond, d.latent + d.cond, d.hidden};
  CvaeParams p;
  for (int i = 0; i < 8; i++) {
    std::vector<float>& v = *p.at(i);
    v.resize(static_cast<size_t>(cvae_param_size(d, i)));
    philox_fill_uniform(seed, stream_id(std::string("cvae:init:") + kCvaeParamNames[i]), 0,
                        static_cast<int64_t>(v.size()), v.data());
    const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in[i / 2]));
    for (float& x : v) x = (2.0f * x - 1.0f) * bound;
  }
  return p;
}

CvaeLoss cvae_forward_backward(const CvaeDims& d, const CvaeParams& p, int64_t n, const float* x, const float* c,
                               const float* eps, double beta, CvaeParams* grads) {
  check_dims(d);
  check_params(d, p);
  const int64_t D = d.input, C = d.cond, H = d.hidden, L = d.latent;
  // Forward.
  std::vector<float> a1(n * H), h1(n * H), e(n * (H + C)), ml(n * 2 * L), z(n * L), din(n * (L + C)), a3(n * H),
      h2(n * H), xh(n * D);
  linear(n, D, H, x, p.w1.data(), p.b1.data(), a1.data());
  for (int64_t i = 0; i < n * H; i++) h1[i] = a1[i] > 0 ? a1[i] : kLeak * a1[i];
  concat(n, h1.data(), H, c, C, e.data());
  linear(n, H + C, 2 * L, e.data(), p.w2.data(), p.b2.data(), ml.data());
  double kl = 0;
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < L; j++) {
      const float mu = ml[r * 2 * L + j], lv = ml[r * 2 * L + L + j];
      z[r * L + j] = mu + std::exp(0.5f * lv) * eps[r * L + j];
      kl += -0.5 * (1.0 + lv - static_cast<double>(mu) * mu - std::exp(static_cast<double>(lv)));
    }
  kl /= static_cast<double>(n);
  concat(n, z.data(), L, c, C, din.data());
  linear(n, L + C, H, din.data(), p.w3.data(), p.b3.data(), a3.data());
  for (int64_t i = 0; i < n * H; i++) h2[i] = a3[i] > 0 ? a3[i] : std::expm1(a3[i]);
  linear(n, H, D, h2.data(), p.w4.data(), p.b4.data(), xh.data());
  double se = 0;
  for (int64_t i = 0; i < n * D; i++) se += static_cast<double>(xh[i] - x[i]) * (xh[i] - x[i]);
  CvaeLoss loss;
  loss.mse = se / static_cast<double>(n * D);
  loss.kl = kl;
  loss.total = loss.mse + beta * kl;
  if (!grads) return loss;

  // Backward.
  *grads = zeros_like(d);
  const float gscale = 2.0f / static_cast<float>(n * D);
  std::vector<float> gx(n * D);
  for (int64_t i = 0; i < n * D; i++) gx[i] = gscale * (xh[i] - x[i]);
  linear_grads(n, H, D, h2.data(), gx.data(), grads->w4.data(), grads->b4.data());
  std::vector<float> gh2(n * H);
  gemm(false, false, n, H, D, gx.data(), p.w4.data(), gh2.data(), 0.0f);
  for (int64_t i = 0; i < n * H; i++) gh2[i] *= a3[i] > 0 ? 1.0f : std::exp(a3[i]);  // ELU'
  linear_grads(n, L + C, H, din.data(), gh2.data(), grads->w3.data(), grads->b3.data());
  std::vector<float> gdin(n * (L + C));
  gemm(false, false, n, L + C, H, gh2.data(), p.w3.data(), gdin.data(), 0.0f);
  std::vector<float> gml(n * 2 * L);
  const float kb = static_cast<float>(beta / static_cast<double>(n));
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < L; j++) {
      const float mu = ml[r * 2 * L + j], lv = ml[r * 2 * L + L + j], gz = gdin[r * (L + C) + j];
      gml[r * 2 * L + j] = gz + kb * mu;
      gml[r * 2 * L + L + j] = gz * eps[r * L + j] * 0.5f * std::exp(0.5f * lv) + kb * 0.5f * (std::exp(lv) - 1.0f);
    }
  linear_grads(n, H + C, 2 * L, e.data(), gml.data(), grads->w2.data(), grads->b2.data());
  std::vector<float> ge(n * (H + C));
  gemm(false, false, n, H + C, 2 * L, gml.data(), p.w2.data(), ge.data(), 0.0f);
  std::vector<float> ga1(n * H);
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < H; j++) ga1[r * H + j] = ge[r * (H + C) + j] * (a1[r * H + j] > 0 ? 1.0f : kLeak);
  linear_grads(n, D, H, x, ga1.data(), grads->w1.data(), grads->b1.data());
  return loss;
}

void adamw_update(CvaeParams* p, const CvaeParams& g, AdamWState* s, const AdamWOptions& o, double lr) {
  s->step += 1;
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(s->step));
  const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(s->step));
  CvaeParams& gg = const_cast<CvaeParams&>(g);
  for (int i = 0; i < 8; i++) {
    std::vector<float>& w = *p->at(i);
    const std::vector<float>& gi = *gg.at(i);
    std::vector<float>& m = *s->m.at(i);
    std::vector<float>& v = *s->v.at(i);
    if (m.size() != w.size()) m.assign(w.size(), 0.0f);
    if (v.size() != w.size()) v.assign(w.size(), 0.0f);
    for (size_t k = 0; k < w.size(); k++) {
      w[k] = static_cast<float>(w[k] * (1.0 - lr * o.weight_decay));
      m[k] = static_cast<float>(o.beta1 * m[k] + (1.0 - o.beta1) * gi[k]);
      v[k] = static_cast<float>(o.beta2 * v[k] + (1.0 - o.beta2) * static_cast<double>(gi[k]) * gi[k]);
      const double denom = std::sqrt(v[k] / bc2) + o.eps;
      w[k] = static_cast<float>(w[k] - lr * (m[k] / bc1) / denom);
    }
  }
}

std::vector<CvaeLoss> cvae_train(const CvaeDims& d, CvaeParams* p, AdamWState* s, int64_t n, const float* x,
                                 const float* c, double beta, const AdamWOptions& o, int64_t total_steps,
                                 int64_t steps, uint64_t seed) {
  check_dims(d);
  check_params(d, *p);
  if (n <= 0) throw Error("invalid_argument", "cvae: the training batch is empty");
  if (total_steps <= 0) throw Error("invalid_argument", "cvae: total_steps must be positive");
  const uint64_t stream = stream_id("cvae:eps");
  std::vector<float> eps(static_cast<size_t>(n * d.latent));
  std::vector<CvaeLoss> out;
  CvaeParams g;
  const double pi = std::acos(-1.0);
  for (int64_t k = 0; k < steps && s->step < total_steps; k++) {
    const int64_t t = s->step;  // 0-based index of this step
    philox_fill_normal(seed, stream, static_cast<uint64_t>(t * n * d.latent), n * d.latent, eps.data());
    out.push_back(cvae_forward_backward(d, *p, n, x, c, eps.data(), beta, &g));
    const double lr = o.lr * 0.5 * (1.0 + std::cos(pi * static_cast<double>(t) / static_cast<double>(total_steps)));
    adamw_update(p, g, s, o, lr);
  }
  return out;
}

void cvae_encode(const CvaeDims& d, const CvaeParams& p, int64_t n, const float* x, const float* c, float* mu,
                 float* logvar) {
  check_dims(d);
  check_params(d, p);
  const int64_t D = d.input, C = d.cond, H = d.hidden, L = d.latent;
  std::vector<float> a1(n * H), e(n * (H + C)), ml(n * 2 * L);
  linear(n, D, H, x, p.w1.data(), p.b1.data(), a1.data());
  for (float& v : a1) v = v > 0 ? v : kLeak * v;
  concat(n, a1.data(), H, c, C, e.data());
  linear(n, H + C, 2 * L, e.data(), p.w2.data(), p.b2.data(), ml.data());
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < L; j++) {
      mu[r * L + j] = ml[r * 2 * L + j];
      logvar[r * L + j] = ml[r * 2 * L + L + j];
    }
}

void cvae_decode(const CvaeDims& d, const CvaeParams& p, int64_t n, const float* z, const float* c, float* out) {
  check_dims(d);
  check_params(d, p);
  const int64_t C = d.cond, H = d.hidden, L = d.latent;
  std::vector<float> din(n * (L + C)), a3(n * H);
  concat(n, z, L, c, C, din.data());
  linear(n, L + C, H, din.data(), p.w3.data(), p.b3.data(), a3.data());
  for (float& v : a3) v = v > 0 ? v : std::expm1(v);
  linear(n, H, d.input, a3.data(), p.w4.data(), p.b4.data(), out);
}

}  // namespace lowrank::generate
