// Merging N LoRA adapters with PEFT's add_weighted_adapter semantics (METHODS §2.1–2.2).
// The default output is the intended maths: every scaling folded into the factors,
// lora_alpha = r, use_rslora = false. ParityMode::kPeft reproduces what PEFT 0.21.2 writes
// (B-heavy svd split, cat zero-padding, use_rslora inherited from the first input).
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lowrank/adapter.h"
#include "lowrank/merge_ops.h"

namespace lowrank {

enum class Combination {
  kLinear, kCat, kSvd, kTies, kTiesSvd, kDareLinear, kDareTies, kDareLinearSvd, kDareTiesSvd,
  kMagnitudePrune, kMagnitudePruneSvd,
};

/** PEFT's combination_type names; throws invalid_argument on anything else. */
Combination parse_combination(const std::string& name);
const char* combination_name(Combination c);

enum class ParityMode { kIntended, kPeft };

struct MergeInput {
  std::map<std::string, LoraModule> modules;  // module path -> factors with their scale
  bool use_rslora = false;                    // read only by ParityMode::kPeft (PEFT inherits it)
  bool dora = false;                          // refused: the magnitude does not combine linearly
  bool lora_bias = false;                     // refused: PEFT drops lora_B.bias silently
};

struct MergeOptions {
  Combination combination = Combination::kSvd;
  std::vector<double> weights;  // one per input
  double density = NAN;         // required by ties/dare/magnitude types
  SignMethod sign_method = SignMethod::kTotal;
  int64_t svd_rank = 0;  // 0: max input rank
  double svd_clamp = NAN;  // quantile in [0, 1]; NaN: no clamp
  uint64_t seed = 0;       // DARE masks: Philox stream dare_stream(module, tensor, input)
  ParityMode parity = ParityMode::kIntended;
  // Dense svd types (ties_svd, dare_*_svd, magnitude_prune_svd): exact thin SVD (double),
  // or randomized (p = 10, niter = 4, Philox stream "rsvd:<module>" of `seed`; METHODS §2.2).
  bool randomized_svd = false;
  // Explicit DARE masks keyed by dare_mask_key(); missing keys come from the seed.
  std::map<std::string, std::vector<uint8_t>> dare_masks;
};

/** "module|A|input" (tensor is "A", "B" or "delta"). */
std::string dare_mask_key(const std::string& module, const std::string& tensor, int64_t input);

struct ModuleMergeInfo {
  std::vector<int64_t> inputs;  // indices of the inputs that had this module
  int64_t rank = 0;
  double retained_energy = NAN;  // svd types: E(k) of the combined delta; NaN otherwise
};

struct MergeResult {
  Combination combination = Combination::kLinear;  // the type applied (one input: linear)
  std::map<std::string, LoraModule> modules;
  std::map<std::string, ModuleMergeInfo> info;
  int64_t r = 0;            // config r: the largest module rank
  double lora_alpha = 0;    // config lora_alpha (intended: per module alpha = rank)
  bool use_rslora = false;  // config use_rslora
};

MergeResult merge_adapters(const std::vector<MergeInput>& inputs, const MergeOptions& opts);

}  // namespace lowrank
