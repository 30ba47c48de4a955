// cuSOLVER behind the exact SVDs (solver.cuh). dlopen()ed, so liblowrank_cuda.so still links
// no CUDA library but cudart (static); where cuSOLVER is absent the SVDs stay on the CPU
// and backendInfo().svd says why.
#include "solver.cuh"

#include "settings.cuh"

namespace lowrank::cuda {
namespace {

enum class Mode { automatic, required, cpu };

struct State {
  bool initialised = false, usable = false, handle_tried = false;
  Mode mode = Mode::automatic;
  std::string library, version, why;
  cusolverDnCreate_fn create = nullptr;
  Solver fns;
};

State& state() {
  static State g;
  return g;
}

std::string load(State& g) {
  std::string tried;
  void* lib = open_first("LOWRANK_CUSOLVER_LIBRARY", {"libcusolver.so.12", "libcusolver.so.11"}, &g.library, &tried);
  if (!lib)
    return "cuSOLVER not found (" + tried + "); install it (pip install nvidia-cusolver) and set LOWRANK_CUSOLVER_LIBRARY";
  g.create = reinterpret_cast<cusolverDnCreate_fn>(dlsym(lib, "cusolverDnCreate"));
  g.fns.gesvd_buffer = reinterpret_cast<cusolverDnDgesvd_bufferSize_fn>(dlsym(lib, "cusolverDnDgesvd_bufferSize"));
  g.fns.gesvd = reinterpret_cast<cusolverDnDgesvd_fn>(dlsym(lib, "cusolverDnDgesvd"));
  if (!g.create || !g.fns.gesvd_buffer || !g.fns.gesvd)
    return g.library + " lacks cusolverDnCreate/cusolverDnDgesvd_bufferSize/cusolverDnDgesvd";
  g.version = library_version(lib, "cusolverGetProperty");
  return "";
}

}  // namespace

lrk_status solver_init() {
  State& g = state();
  if (g.initialised) return LRK_OK;
  std::string mode;
  if (lrk_status s = setting("LOWRANK_CUDA_SVD", "auto", {"auto", "cusolver", "cpu"}, &mode)) return s;
  g.mode = mode == "cpu" ? Mode::cpu : mode == "cusolver" ? Mode::required : Mode::automatic;
  g.initialised = true;
  if (g.mode == Mode::cpu) {
    g.why = "LOWRANK_CUDA_SVD=cpu";
    return LRK_OK;
  }
  g.why = load(g);
  g.usable = g.why.empty();
  if (!g.usable && g.mode == Mode::required) return fail(LRK_DEVICE_ERROR, g.why + " (LOWRANK_CUDA_SVD=cusolver)");
  return LRK_OK;
}

std::string svd_description() {
  const State& g = state();
  if (!g.usable) return "cpu LAPACK (" + (g.why.empty() ? std::string("cuSOLVER not loaded") : g.why) + ")";
  return "cuSOLVER " + (g.version.empty() ? std::string("(version unknown)") : g.version) + " gesvd, fp64 (" +
         g.library + ")";
}

bool solver_in_use() { return state().usable; }

const Solver* solver() {
  State& g = state();
  if (!g.usable) {
    fail(LRK_DEVICE_ERROR, "cuSOLVER is not in use: " + svd_description());
    return nullptr;
  }
  if (g.fns.handle) return &g.fns;
  if (!g.handle_tried) {
    g.handle_tried = true;
    const cusolverStatus_t s = g.create(&g.fns.handle);
    if (s != CUSOLVER_STATUS_SUCCESS) {
      g.fns.handle = nullptr;
      g.why = "cusolverDnCreate failed with status " + std::to_string(s);
    }
  }
  if (!g.fns.handle) {
    fail(LRK_DEVICE_ERROR, g.why);
    return nullptr;
  }
  return &g.fns;
}

}  // namespace lowrank::cuda
