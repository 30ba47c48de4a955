// Helpers shared by the C++ unit tests.
#pragma once
#include <algorithm>
#include <cmath>

#include "lowrank/linalg.h"

namespace lowrank {

/** ‖x − y‖_F / ‖y‖_F in double. */
inline double rel_diff(const Matrix& x, const Matrix& y) {
  double d = 0, n = 0;
  for (size_t i = 0; i < x.data.size(); i++) {
    double e = static_cast<double>(x.data[i]) - y.data[i];
    d += e * e;
    n += static_cast<double>(y.data[i]) * y.data[i];
  }
  return std::sqrt(d) / std::max(std::sqrt(n), 1e-30);
}

}  // namespace lowrank
