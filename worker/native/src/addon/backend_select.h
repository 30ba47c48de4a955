// Which backend runs the ops (LOWRANK_BACKEND = cpu | cuda | auto, auto by default): the
// CPU always; the CUDA backend when liblowrank_cuda.so, the driver (libcuda.so.1) and a
// device are all there. The library is dlopen()ed, so the addon itself never links the
// CUDA runtime and loads on machines without a driver. Resolved once per process.
#pragma once
#include <string>

#include "lowrank/backend_ops.h"

namespace lowrank::addon {

struct BackendInfo {
  std::string requested;  // cpu | cuda | auto
  std::string backend;    // what runs: cpu | cuda
  std::string reason;     // why the CPU runs when cuda was wanted (empty otherwise)
  std::string device;     // the GPU, when cuda runs
  std::string library;    // the CUDA library path that was tried (empty for cpu)
  bool cuda_available = false;
};

/** The resolution; throws Error("invalid_argument") for an unknown LOWRANK_BACKEND. */
const BackendInfo& backend_info();

/** A symbol of the loaded CUDA library (its benchmark entry), or nullptr. */
void* cuda_symbol(const char* name);

/** The CUDA table, or nullptr when the CUDA backend is unavailable. */
const lrk_ops* cuda_ops();

/**
 * The table for "cpu", "cuda" or "active" (the resolved backend). Throws
 * Error("backend_unavailable", reason) for "cuda", or for "active" when
 * LOWRANK_BACKEND=cuda was asked for and cannot be had.
 */
const lrk_ops& ops_for(const std::string& which);

}  // namespace lowrank::addon
