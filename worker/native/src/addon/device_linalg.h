// The CUDA backend's dense operator for the core's randomized SVDs (device_linalg.cc).
#pragma once

namespace lowrank::addon {

/** Routes backend_dense_operator to the device; false when the library (symbols from `symbol`) lacks lrk_cuda_matrix_*. */
bool install_device_linalg(void* (*symbol)(const char* name));

}  // namespace lowrank::addon
