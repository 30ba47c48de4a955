#include "lowrank/version.h"

#include <cblas.h>

namespace lowrank {

const char* version() { return "0.1.0"; }

std::string blas_info() {
  // OpenBLAS reports its build configuration (threading model, target CPU).
  return openblas_get_config();
}

}  // namespace lowrank
