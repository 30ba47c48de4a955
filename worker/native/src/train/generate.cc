// Generation with a KV cache (see Engine::generate): the decoding loop (generate_loop.h)
// and the CPU engine's forward pass of engine.cc restricted to new positions, attending to
// cached keys and values.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "engine.h"
#include "generate_loop.h"
#include "lowrank/error.h"
#include "lowrank/linalg.h"
#include "lowrank/rng.h"
#include "parallel.h"
#include "rope.h"

namespace lowrank::train {

namespace {

void rmsnorm(const float* x, const float* w, int64_t n, int64_t d, double eps, float* y) {
  parallel_for_work(n * d, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float* xi = x + i * d;
      double ss = 0;
      for (int64_t j = 0; j < d; j++) ss += static_cast<double>(xi[j]) * xi[j];
      const auto r = static_cast<float>(1.0 / std::sqrt(static_cast<double>(static_cast<float>(ss / d)) + eps));
      for (int64_t j = 0; j < d; j++) y[i * d + j] = w[j] * (xi[j] * r);
    }
  });
}

}  // namespace

// Next token from one row of logits: argmax (first on ties) or temperature + top-p sampling
// (transformers' order: scale by 1/T, then keep the smallest most-probable set whose mass
// reaches top_p, always at least one token). The sorted order (p descending, index ascending
// on ties: std::stable_sort's) is built only as far as the kept set needs: the next best
// entries by nth_element, then sorted, 4× more each round until the mass reaches top_p. The
// sums run over the same entries in the same order as a full sort's, so the token is the same.
int32_t choose_token(const float* logits, int64_t V, const SampleOptions& o, float u) {
  if (o.temperature <= 0) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<double> p(static_cast<size_t>(V));
  double mx = -INFINITY;
  for (int64_t j = 0; j < V; j++) mx = std::max(mx, static_cast<double>(logits[j]) / o.temperature);
  double sum = 0;
  for (int64_t j = 0; j < V; j++) sum += p[static_cast<size_t>(j)] = std::exp(static_cast<double>(logits[j]) / o.temperature - mx);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  auto before = [&](int32_t a, int32_t b) {
    const double pa = p[static_cast<size_t>(a)], pb = p[static_cast<size_t>(b)];
    return pa > pb || (pa == pb && a < b);
  };
  const size_t n = order.size();
  size_t keep = 0, sorted = 0, k = std::min<size_t>(n, 256);
  double mass = 0;
  bool reached = false;
  while (!reached) {
    if (k < n) std::nth_element(order.begin() + static_cast<std::ptrdiff_t>(sorted), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), before);
    std::sort(order.begin() + static_cast<std::ptrdiff_t>(sorted), order.begin() + static_cast<std::ptrdiff_t>(k), before);
    while (keep < k) {
      mass += p[static_cast<size_t>(order[keep])] / sum;
      keep++;
      if (mass >= o.top_p) {
        reached = true;
        break;
      }
    }
    if (k == n) break;
    sorted = k;
    k = std::min(n, 4 * k);
  }
  double target = static_cast<double>(u) * mass * sum, acc = 0;
  for (size_t i = 0; i < keep; i++) {
    acc += p[static_cast<size_t>(order[i])];
    if (target < acc) return order[i];
  }
  return order[keep - 1];
}

namespace {

// The arguments' checks; each row's left padding.
std::vector<int64_t> check_generate(const ModelConfig& c, const int32_t* prompt, int64_t rows, int64_t prompt_len,
                                    int64_t max_new, const SampleOptions& o, const int64_t* left_pad) {
  const int64_t V = c.vocab_size;
  if (rows < 1 || prompt_len < 1 || max_new < 1) throw Error("invalid_argument", "generate needs rows, prompt_len and max_new >= 1");
  const int64_t L = prompt_len + max_new;
  if (L > c.max_position_embeddings) {
    throw Error("invalid_argument", "prompt + new tokens (" + std::to_string(L) + ") exceed max_position_embeddings (" +
                                        std::to_string(c.max_position_embeddings) + ")");
  }
  for (int64_t i = 0; i < rows * prompt_len; i++) {
    if (prompt[i] < 0 || prompt[i] >= V) throw Error("invalid_argument", "prompt token " + std::to_string(prompt[i]) + " is outside the vocabulary");
  }
  std::vector<int64_t> pad(static_cast<size_t>(rows), 0);
  for (int64_t b = 0; b < rows && left_pad; b++) {
    if (left_pad[b] < 0 || left_pad[b] >= prompt_len) {
      throw Error("invalid_argument", "row " + std::to_string(b) + ": left padding must leave at least one prompt token");
    }
    pad[static_cast<size_t>(b)] = left_pad[b];
  }
  if (!(o.top_p > 0 && o.top_p <= 1)) throw Error("invalid_argument", "top_p must be in (0, 1]");
  if (!(o.temperature >= 0 && std::isfinite(o.temperature))) throw Error("invalid_argument", "temperature must be >= 0");
  return pad;
}

}  // namespace

std::vector<int32_t> generate_loop(const ModelConfig& c, const int32_t* prompt, int64_t rows, int64_t prompt_len,
                                   int64_t max_new, const SampleOptions& o, const int64_t* left_pad,
                                   const GenerateForward& forward) {
  const std::vector<int64_t> pad = check_generate(c, prompt, rows, prompt_len, max_new, o, left_pad);
  const int64_t V = c.vocab_size, L = prompt_len + max_new;
  const uint64_t stream = stream_id("sample");
  std::vector<int32_t> out(static_cast<size_t>(rows * max_new));
  std::vector<int32_t> cur(prompt, prompt + rows * prompt_len);
  std::vector<uint8_t> done(static_cast<size_t>(rows), 0);
  std::vector<float> logits(static_cast<size_t>(rows * V));
  for (int64_t step = 0; step < max_new; step++) {
    const int64_t t = step == 0 ? prompt_len : 1, p0 = step == 0 ? 0 : prompt_len + step - 1, n = rows * t;
    std::vector<int64_t> pos(static_cast<size_t>(n)), key_start(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) {
      const int64_t pb = pad[static_cast<size_t>(i / t)], last = p0 + i % t;
      // Position within the row's real tokens (pads: 0, they are never attended to).
      pos[static_cast<size_t>(i)] = std::max<int64_t>(0, last - pb);
      // Real queries skip the row's pads; pad queries (outputs never used) see the causal prefix.
      key_start[static_cast<size_t>(i)] = last >= pb ? pb : 0;
    }
    forward(GenerateStep{rows, t, p0, L, &cur, &pos, &key_start}, logits.data());
    cur.assign(static_cast<size_t>(rows), 0);
    for (int64_t b = 0; b < rows; b++) {
      int32_t tok;
      if (done[static_cast<size_t>(b)]) {
        tok = o.eos;
      } else {
        const uint64_t idx = static_cast<uint64_t>(b * max_new + step);
        tok = choose_token(logits.data() + b * V, V, o, o.temperature > 0 ? philox_uniform(o.seed, stream, idx) : 0.0f);
        if (o.eos >= 0 && tok == o.eos) done[static_cast<size_t>(b)] = 1;
      }
      out[static_cast<size_t>(b * max_new + step)] = tok;
      cur[static_cast<size_t>(b)] = tok;
    }
  }
  return out;
}

std::vector<int32_t> Engine::generate(const int32_t* prompt, int64_t rows, int64_t prompt_len, int64_t max_new,
                                      const SampleOptions& o, const int64_t* left_pad) const {
  const ModelConfig& c = model_->cfg;
  const int64_t d = c.hidden_size, V = c.vocab_size, ff = c.intermediate_size, hd = c.head_dim;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), nh = c.num_heads, group = nh / c.num_kv_heads;
  BlasSingleThread blas_guard;
  std::vector<float> cos, sin;
  std::vector<std::vector<float>> kc(static_cast<size_t>(c.num_layers)), vc(static_cast<size_t>(c.num_layers));
  int64_t rmax = 0;
  for (const auto& layer : slots_)
    for (const LoraSlot& s : layer) rmax = std::max(rmax, s.r);

  auto forward = [&](const GenerateStep& st, float* logits) {
    const int64_t t = st.t, p0 = st.p0, n = rows * t, L = st.max_len;
    if (p0 == 0) {  // the prefill (the loop has checked the arguments): the tables and caches
      rope_tables(c, 0, L, &cos, &sin);
      for (auto& k : kc) k.assign(static_cast<size_t>(rows * L * kvd), 0.0f);
      for (auto& v : vc) v.assign(static_cast<size_t>(rows * L * kvd), 0.0f);
    }
    std::vector<float> x(static_cast<size_t>(n * d)), x1(x.size()), tmp(x.size());
    std::vector<float> q(static_cast<size_t>(n * qd)), k(static_cast<size_t>(n * kvd)), v(k.size()), ao(q.size());
    std::vector<float> gate(static_cast<size_t>(n * ff)), up(gate.size()), h(static_cast<size_t>(n * std::max<int64_t>(rmax, 1)));
    const int64_t* pos = st.pos->data();
    for (int64_t i = 0; i < n; i++)
      std::memcpy(x.data() + i * d, model_->embed.data() + static_cast<int64_t>((*st.tokens)[static_cast<size_t>(i)]) * d, sizeof(float) * d);
    for (int64_t l = 0; l < c.num_layers; l++) {
      const Layer& w = model_->layers[static_cast<size_t>(l)];
      rmsnorm(x.data(), w.input_norm.data(), n, d, c.rms_norm_eps, x1.data());
      linear_forward(l, kQ, x1.data(), n, q.data(), h.data());
      linear_forward(l, kK, x1.data(), n, k.data(), h.data());
      linear_forward(l, kV, x1.data(), n, v.data(), h.data());
      rope_apply(q.data(), n, qd, nh, hd, pos, cos.data(), sin.data(), false);
      rope_apply(k.data(), n, kvd, c.num_kv_heads, hd, pos, cos.data(), sin.data(), false);
      float* K = kc[static_cast<size_t>(l)].data();
      float* Vc = vc[static_cast<size_t>(l)].data();
      for (int64_t b = 0; b < rows; b++)
        for (int64_t i = 0; i < t; i++) {
          std::memcpy(K + (b * L + p0 + i) * kvd, k.data() + (b * t + i) * kvd, sizeof(float) * kvd);
          std::memcpy(Vc + (b * L + p0 + i) * kvd, v.data() + (b * t + i) * kvd, sizeof(float) * kvd);
        }
      const int64_t keys = p0 + t, window = c.window[static_cast<size_t>(l)];
      const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
      parallel_for(rows * nh, [&](int64_t t0, int64_t t1) {
        std::vector<float> S(static_cast<size_t>(t * keys));
        for (int64_t task = t0; task < t1; task++) {
          const int64_t b = task / nh, hh = task % nh, g = hh / group;
          gemm(false, true, t, keys, hd, scale, q.data() + b * t * qd + hh * hd, qd, K + b * L * kvd + g * hd, kvd, 0.0f, S.data(), keys);
          for (int64_t i = 0; i < t; i++) {
            float* row = S.data() + i * keys;
            const int64_t last = p0 + i;
            const int64_t lo = std::max<int64_t>(window > 0 ? last - window + 1 : 0, (*st.key_start)[static_cast<size_t>(b * t + i)]);
            float mx = -INFINITY;
            for (int64_t j = lo; j <= last; j++) mx = std::max(mx, row[j]);
            double sum = 0;
            for (int64_t j = lo; j <= last; j++) sum += row[j] = std::exp(row[j] - mx);
            const auto inv = static_cast<float>(1.0 / sum);
            for (int64_t j = 0; j < keys; j++) row[j] = j >= lo && j <= last ? row[j] * inv : 0.0f;
          }
          gemm(false, false, t, hd, keys, 1.0f, S.data(), keys, Vc + b * L * kvd + g * hd, kvd, 0.0f, ao.data() + b * t * qd + hh * hd, qd);
        }
      });
      linear_forward(l, kO, ao.data(), n, tmp.data(), h.data());
      for (size_t i = 0; i < x.size(); i++) x[i] += tmp[i];
      rmsnorm(x.data(), w.post_norm.data(), n, d, c.rms_norm_eps, x1.data());
      linear_forward(l, kGate, x1.data(), n, gate.data(), h.data());
      linear_forward(l, kUp, x1.data(), n, up.data(), h.data());
      for (size_t i = 0; i < gate.size(); i++) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
      linear_forward(l, kDown, gate.data(), n, tmp.data(), h.data());
      for (size_t i = 0; i < x.size(); i++) x[i] += tmp[i];
    }
    // Logits of each row's last position only.
    std::vector<float> last(static_cast<size_t>(rows * d)), xf(last.size());
    for (int64_t b = 0; b < rows; b++) std::memcpy(last.data() + b * d, x.data() + (b * t + t - 1) * d, sizeof(float) * d);
    rmsnorm(last.data(), model_->norm.data(), rows, d, c.rms_norm_eps, xf.data());
    pgemm(false, true, rows, V, d, 1.0f, xf.data(), d, model_->head(), d, 0.0f, logits, V);
  };
  return generate_loop(c, prompt, rows, prompt_len, max_new, o, left_pad, forward);
}

}  // namespace lowrank::train
