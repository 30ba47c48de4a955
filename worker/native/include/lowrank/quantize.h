// Quantizers (METHODS §7 P15): int8 adapter factors with one fp32 scale per row, and the
// group-wise symmetric round-to-nearest used to build compressed bases for EoRA.
#pragma once
#include <cstdint>
#include <vector>

#include "lowrank/linalg.h"

namespace lowrank {

/** q[i, j] = round(m[i, j] / scale[i]) in [−127, 127], scale[i] = max_j |m[i, j]| / 127 (0 rows: 0). */
struct QuantizedRows {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int8_t> q;
  std::vector<float> scale;
};

QuantizedRows quantize_int8_rows(const Matrix& m);
/** q · scale[row], as PyTorch's q.float() * scale[:, None]. */
Matrix dequantize_int8_rows(const QuantizedRows& q);

/** Ŵ: each run of group_size entries of a row rounded to a symmetric `bits` grid (absmax scale). */
Matrix rtn_quantize(const Matrix& w, int bits, int64_t group_size);

}  // namespace lowrank
