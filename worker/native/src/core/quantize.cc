// Round-to-nearest quantizers; fp32 arithmetic in PyTorch's order so that a PyTorch
// reference (x / scale).round() gives the same integers (torch.round: half to even).
#include "lowrank/quantize.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "lowrank/error.h"

namespace lowrank {

QuantizedRows quantize_int8_rows(const Matrix& m) {
  QuantizedRows out;
  out.rows = m.rows;
  out.cols = m.cols;
  out.q.resize(m.data.size());
  out.scale.resize(static_cast<size_t>(m.rows));
  for (int64_t i = 0; i < m.rows; i++) {
    float amax = 0.0f;
    for (int64_t j = 0; j < m.cols; j++) {
      float v = m.at(i, j);
      if (!std::isfinite(v)) throw Error("invalid_argument", "quantize: row " + std::to_string(i) + " has a non-finite entry");
      amax = std::max(amax, std::fabs(v));
    }
    const float scale = amax / 127.0f;
    out.scale[static_cast<size_t>(i)] = scale;
    for (int64_t j = 0; j < m.cols; j++) {
      float q = scale == 0.0f ? 0.0f : std::nearbyint(m.at(i, j) / scale);
      out.q[static_cast<size_t>(i * m.cols + j)] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
    }
  }
  return out;
}

Matrix dequantize_int8_rows(const QuantizedRows& q) {
  if (q.q.size() != static_cast<size_t>(q.rows * q.cols) || q.scale.size() != static_cast<size_t>(q.rows))
    throw Error("invalid_argument", "dequantize: expected rows·cols int8 values and one scale per row");
  Matrix m(q.rows, q.cols);
  for (int64_t i = 0; i < q.rows; i++)
    for (int64_t j = 0; j < q.cols; j++)
      m.at(i, j) = static_cast<float>(q.q[static_cast<size_t>(i * q.cols + j)]) * q.scale[static_cast<size_t>(i)];
  return m;
}

Matrix rtn_quantize(const Matrix& w, int bits, int64_t group_size) {
  if (bits < 2 || bits > 8) throw Error("invalid_argument", "rtn: bits must be in [2, 8]");
  if (group_size < 1) throw Error("invalid_argument", "rtn: groupSize must be >= 1");
  const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
  Matrix out(w.rows, w.cols);
  for (int64_t i = 0; i < w.rows; i++)
    for (int64_t g = 0; g < w.cols; g += group_size) {
      const int64_t end = std::min(w.cols, g + group_size);
      float amax = 0.0f;
      for (int64_t j = g; j < end; j++) amax = std::max(amax, std::fabs(w.at(i, j)));
      const float scale = amax / qmax;
      for (int64_t j = g; j < end; j++)
        out.at(i, j) = scale == 0.0f ? 0.0f : std::clamp(std::nearbyint(w.at(i, j) / scale), -qmax, qmax) * scale;
    }
  return out;
}

}  // namespace lowrank
