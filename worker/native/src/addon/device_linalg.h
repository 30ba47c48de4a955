// The CUDA backend's SVDs for the core (device_linalg.cc): the randomized SVDs' dense
// operator, and the exact SVDs on cuSOLVER.
#pragma once
#include <cstdint>
#include <mutex>

#include "lowrank/backend_ops.h"

namespace lowrank::addon {

/** Serialises the addon's device calls (merges run on libuv workers; the handles are not for concurrent use). */
std::mutex& device_mutex();

/** Below this many elements (256 × 256) the upload and launches cost more than the CPU's SVD or merge. */
constexpr int64_t kDeviceMinElements = int64_t{1} << 16;

/** Throws Error (invalid_argument or device_error) for a failed library call: "<what>: <last_error()>". */
void check_device(lrk_status s, const char* (*last_error)(), const char* what);

/**
 * Routes backend_dense_operator to the device, and svd_thin_f64 too when the library has
 * cuSOLVER in use; false when the library (symbols from `symbol`) lacks lrk_cuda_matrix_*.
 */
bool install_device_linalg(void* (*symbol)(const char* name));

}  // namespace lowrank::addon
