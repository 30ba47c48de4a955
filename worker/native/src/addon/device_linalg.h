// The CUDA backend's SVDs for the core (device_linalg.cc): the randomized SVDs' dense
// operator, and the exact SVDs on cuSOLVER.
#pragma once
#include <mutex>

namespace lowrank::addon {

/** Serialises the addon's device calls (merges run on libuv workers; the handles are not for concurrent use). */
std::mutex& device_mutex();

/**
 * Routes backend_dense_operator to the device, and svd_thin_f64 too when the library has
 * cuSOLVER in use; false when the library (symbols from `symbol`) lacks lrk_cuda_matrix_*.
 */
bool install_device_linalg(void* (*symbol)(const char* name));

}  // namespace lowrank::addon
