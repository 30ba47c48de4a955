// Causal GQA attention of one sequence on the CPU, the plain-loop reference: scores in
// fp32, softmax max-shifted with the sum in double (the engine's causal_softmax), then P V.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_ops.h"

extern "C" lrk_status lrk_cpu_attention_forward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                                const float* q, const float* k, const float* v, float* out) {
  if (T < 0 || heads < 1 || kv_heads < 1 || heads % kv_heads || head_dim < 1)
    return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "attention: heads must be a multiple of kv_heads >= 1");
  const int64_t qd = heads * head_dim, kvd = kv_heads * head_dim, group = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> p(static_cast<size_t>(T));
  for (int64_t h = 0; h < heads; h++) {
    const int64_t kh = h / group;
    for (int64_t i = 0; i < T; i++) {
      const float* qi = q + i * qd + h * head_dim;
      float mx = -INFINITY;
      for (int64_t j = 0; j <= i; j++) {
        const float* kj = k + j * kvd + kh * head_dim;
        float s = 0;
        for (int64_t e = 0; e < head_dim; e++) s += qi[e] * kj[e];
        p[static_cast<size_t>(j)] = s * scale;
        mx = std::max(mx, s * scale);
      }
      double sum = 0;
      for (int64_t j = 0; j <= i; j++) {
        p[static_cast<size_t>(j)] = std::exp(p[static_cast<size_t>(j)] - mx);
        sum += p[static_cast<size_t>(j)];
      }
      const auto inv = static_cast<float>(1.0 / sum);
      float* o = out + i * qd + h * head_dim;
      std::fill(o, o + head_dim, 0.0f);
      for (int64_t j = 0; j <= i; j++) {
        const float pj = p[static_cast<size_t>(j)] * inv;
        const float* vj = v + j * kvd + kh * head_dim;
        for (int64_t e = 0; e < head_dim; e++) o[e] += pj * vj[e];
      }
    }
  }
  return LRK_OK;
}

// The engine's attention_backward on one sequence, P recomputed as the forward does:
// dP = dO Vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)) (rowsum in double); dQ = s dS K;
// dK += s dSᵀ Q and dV += Pᵀ dO over the heads of each KV group in order.
extern "C" lrk_status lrk_cpu_attention_backward(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                                 const float* q, const float* k, const float* v, const float* dout,
                                                 float* dq, float* dk, float* dv) {
  if (T < 0 || heads < 1 || kv_heads < 1 || heads % kv_heads || head_dim < 1)
    return lowrank::cpu::fail(LRK_INVALID_ARGUMENT, "attention_backward: heads must be a multiple of kv_heads >= 1");
  const int64_t qd = heads * head_dim, kvd = kv_heads * head_dim, group = heads / kv_heads, hd = head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::fill(dk, dk + T * kvd, 0.0f);
  std::fill(dv, dv + T * kvd, 0.0f);
  std::vector<float> P(static_cast<size_t>(T * T)), dS(static_cast<size_t>(T * T));
  for (int64_t h = 0; h < heads; h++) {
    const int64_t kh = h / group;
    for (int64_t i = 0; i < T; i++) {  // P row i, as attention_forward
      float* p = P.data() + i * T;
      const float* qi = q + i * qd + h * hd;
      float mx = -INFINITY;
      for (int64_t j = 0; j <= i; j++) {
        float s = 0;
        for (int64_t e = 0; e < hd; e++) s += qi[e] * k[j * kvd + kh * hd + e];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= i; j++) {
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      const auto inv = static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j <= i; j++) p[j] *= inv;
      for (int64_t j = i + 1; j < T; j++) p[j] = 0.0f;
      float* gr = dS.data() + i * T;
      const float* doi = dout + i * qd + h * hd;
      double dot = 0;
      for (int64_t j = 0; j <= i; j++) {
        float dp = 0;
        for (int64_t e = 0; e < hd; e++) dp += doi[e] * v[j * kvd + kh * hd + e];
        gr[j] = dp;
        dot += static_cast<double>(p[j]) * dp;
      }
      const auto df = static_cast<float>(dot);
      for (int64_t j = 0; j <= i; j++) gr[j] = p[j] * (gr[j] - df);
      for (int64_t j = i + 1; j < T; j++) gr[j] = 0.0f;
    }
    for (int64_t i = 0; i < T; i++)
      for (int64_t e = 0; e < hd; e++) {
        float a = 0;
        for (int64_t j = 0; j <= i; j++) a += dS[static_cast<size_t>(i * T + j)] * k[j * kvd + kh * hd + e];
        dq[i * qd + h * hd + e] = scale * a;
      }
    for (int64_t j = 0; j < T; j++)
      for (int64_t e = 0; e < hd; e++) {
        float a = 0, b = 0;
        for (int64_t i = j; i < T; i++) {
          a += dS[static_cast<size_t>(i * T + j)] * q[i * qd + h * hd + e];
          b += P[static_cast<size_t>(i * T + j)] * dout[i * qd + h * hd + e];
        }
        dk[j * kvd + kh * hd + e] += scale * a;
        dv[j * kvd + kh * hd + e] += b;
      }
  }
  return LRK_OK;
}
