// The optimizer side of a training step, with PyTorch/transformers semantics:
// torch.optim.AdamW (decoupled weight decay, single-tensor CPU path), clip_grad_norm_
// (max_norm / (total + 1e-6), clamped to 1, always applied), and the learning-rate
// schedules of transformers' get_{constant,linear,cosine}_schedule_with_warmup.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"

namespace lowrank::train {

struct OptimConfig {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 0.0;  // <= 0: no clipping
  std::string schedule = "constant";  // constant | linear | cosine (all with warmup)
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // needed by linear and cosine
};

/** Validates; Error("invalid_argument") naming the field. */
void check_optim(const OptimConfig& o);

/** The multiplier of lr at scheduler step `step` (0 for the first optimizer step). */
double lr_lambda(const OptimConfig& o, int64_t step);

struct StepResult {
  double loss = 0;         // Σ loss / Σ labelled tokens over all micro-batches
  int64_t tokens = 0;      // labelled tokens
  double grad_norm = 0;    // before clipping (what clip_grad_norm_ returns)
  double lr = 0;           // the learning rate this step used
};

/**
 * One optimizer step over micro-batches (gradient accumulation): the loss is the mean over
 * every labelled token of every micro-batch (transformers' num_items_in_batch), then clip,
 * AdamW with lr · lr_lambda(step), step += 1.
 */
StepResult train_step(Engine& engine, const OptimConfig& o, int64_t* step, const std::vector<Batch>& micro);

}  // namespace lowrank::train
