#pragma once
#include <string>

namespace lowrank {
const char* version();
/** The BLAS build in use, recorded with every result for reproducibility. */
std::string blas_info();
}  // namespace lowrank
