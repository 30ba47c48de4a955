// The CUDA training engine (include/lowrank/device_engine.h) driven from a CPU engine's
// session: the CPU engine stays the description of the model and adapter (and runs
// forwards with logits or gradients); this uploads its frozen weights once, mirrors its
// adapter and AdamW state on the device, and runs train_step's loop (optim.cc), loss-only
// evaluation and generation's forward (with KV caches; the sampling loop is the CPU's,
// train/generate_loop.h) there. What the
// device engine does not implement is named by unsupported(), so the caller can fall back.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "../train/engine.h"
#include "../train/optim.h"

struct lrk_dev_engine;

namespace lowrank::addon {

class DeviceTrainer {
 public:
  /** Why this engine state cannot train on the device ("" when it can): names the feature. */
  static std::string unsupported(const train::Engine& engine);
  /**
   * The device engine of `engine`'s model, weights and adapter. Throws Error
   * ("backend_unavailable") without the CUDA backend or its engine entry points.
   */
  static std::unique_ptr<DeviceTrainer> create(const train::Engine& engine);
  ~DeviceTrainer();
  DeviceTrainer(const DeviceTrainer&) = delete;
  DeviceTrainer& operator=(const DeviceTrainer&) = delete;

  /** Re-uploads the projections' frozen weights (after a base-weight override changed). */
  void upload_weights(const train::Engine& engine);
  /** Lays out and uploads the adapter's factors and AdamW moments (after the host changed them). */
  void upload_adapter(const train::Engine& engine);
  /** Copies the factors, the moments and (with `grads`) the gradients back into the engine's slots. */
  void download(train::Engine& engine, bool grads);
  /** bf16 (or fp32) matmul for the GEMMs with a bf16 frozen weight; true when bf16 will run (cuBLAS, bf16 weights). */
  bool set_matmul(bool bf16);
  /** Engine::forward's loss sum and labelled-token count of a labelled batch (no dropout, no gradients). */
  train::LossSum evaluate(const train::Engine& engine, const train::Batch& batch);
  /** Engine::generate with the forward on the device: the same checks, positions and sampling. */
  std::vector<int32_t> generate(const train::Engine& engine, const int32_t* prompt, int64_t rows, int64_t prompt_len,
                                int64_t max_new, const train::SampleOptions& o, const int64_t* left_pad);
  /** train_step (optim.cc) on the device; *step advances as there. */
  train::StepResult step(const train::Engine& engine, const train::OptimConfig& o, int64_t* step,
                         const std::vector<train::Batch>& micro);

 private:
  DeviceTrainer() = default;
  void check(int status) const;
  void upload_rope(const train::Engine& engine, int64_t seq);

  lrk_dev_engine* dev_ = nullptr;
  int64_t rope_npos_ = 0;
  int64_t num_params_ = 0;
};

}  // namespace lowrank::addon
