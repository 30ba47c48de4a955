// Merges on full deltas with mergekit semantics (METHODS §2.3, §2.4): task arithmetic,
// TIES, DARE (linear and TIES) and Model Stock on dense δ_i = W_i − W_0 (or s_i·B_i·A_i),
// and the truncated-SVD re-factoring that turns any dense delta back into an adapter.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lowrank/adapter.h"
#include "lowrank/merge_ops.h"

namespace lowrank {

enum class DeltaMethod { kTaskArithmetic, kTies, kDareLinear, kDareTies };

/** "task_arithmetic", "ties", "dare_linear", "dare_ties" (mergekit's names). */
DeltaMethod parse_delta_method(const std::string& name);

struct DeltaMergeOptions {
  DeltaMethod method = DeltaMethod::kTaskArithmetic;
  std::vector<double> weights;  // w_i, one per delta
  double density = 1.0;         // ties: top max(1, int(d·n)); dare: Bernoulli(d)
  SignMethod sign = SignMethod::kTotal;  // mergekit "sum" / "count", on the weighted deltas
  double lambda = 1.0;                   // result = λ · mix
  int normalize = -1;   // -1: mergekit's default (on for ties, off otherwise); 0/1 forces
  int rescale = -1;     // DARE L1 rescale; -1: mergekit's default (on for dare_*)
  uint64_t seed = 0;    // DARE masks: Philox stream dare_stream(module, "mk", input)
  std::string module;   // names the streams and the errors
  std::vector<std::vector<uint8_t>> masks;  // explicit DARE keep-masks per input (tests)
};

/** mix = λ · (Σ w_i δ'_i [⊙ keep_i]) [/ divisor] with mergekit's fp32 arithmetic. */
Matrix merge_deltas(std::vector<Matrix> deltas, const DeltaMergeOptions& opts);

/** merge_deltas' work with every default resolved, for another backend. */
struct DeltaMixRequest {
  const std::vector<Matrix>* deltas = nullptr;
  bool trim = false;      // ties: keep the `keep` largest |δ|
  int64_t keep = 0;       // max(1, int(d·n)) (d >= 1: all; d <= 0: none)
  bool dare = false;      // DARE keep mask (d < 1), L1 rescale when `rescale`
  bool rescale = false;
  bool ties = false;      // the sign election and the agreeing weights' divisor
  bool normalize = false;
  double density = 1.0, lambda = 1.0;
  SignMethod sign = SignMethod::kTotal;
  uint64_t seed = 0;
  std::vector<uint64_t> streams;                          // DARE: dare_stream(module, "mk", i) (empty otherwise)
  const std::vector<std::vector<uint8_t>>* masks = nullptr;  // explicit DARE masks, or empty
  std::vector<float> weights;
  float weight_sum = 1.0f;  // Σ w (1 when |Σ w| < 1e-8): the divisor without ties
};

/** Another backend's merge_deltas (the CUDA one's): true with the mix, false to leave it to the CPU. */
using DeltaMixProvider = std::function<bool(const DeltaMixRequest&, Matrix* mix)>;
/** Installs the provider merge_deltas tries first (the addon, once, when the CUDA backend is chosen). */
void set_delta_mix_provider(DeltaMixProvider f);

/** How many singular triplets to keep: fixed k, or PEFT's energy rule, capped at max_rank. */
struct RankChoice {
  int64_t rank = 0;        // fixed k (0: use energy)
  double energy = 0;       // τ in (0, 1] when rank == 0
  int64_t max_rank = 0;    // 0: no cap
};

struct DenseFactorOptions {
  RankChoice choice;
  bool randomized = false;  // randomized SVD (p, niter below) instead of the exact f64 thin SVD
  int64_t oversample = 10;
  int niter = 4;
  uint64_t seed = 0;
  uint64_t stream = 0;
  Split split = Split::kBalanced;
};

struct DenseFactorResult {
  LoraModule module;             // scale 1, rank k
  std::vector<float> sigma;      // the singular values computed (all when exact)
  double retained_energy = 1.0;  // Σ_{i≤k} σ_i² / ‖M‖_F²
  double rel_error = 0.0;        // √(1 − E(k))
};

/** A dense [out, in] matrix as a rank-k LoRA at scale 1 (METHODS §3.1 on dense input). */
DenseFactorResult factor_dense(const Matrix& m, const DenseFactorOptions& opts);

/** PEFT's _find_cutoff_index on σ (f32 squares, f64 running sum rounded to f32 per step). */
int64_t energy_cutoff(const std::vector<float>& sigma, double tau);

struct ModelStockResult {
  LoraModule module;        // cat of the inputs with B rows scaled by t/N (exact, scale 1)
  std::vector<double> cos;  // mean pairwise cosine (one, or one per output row)
  std::vector<double> t;    // interpolation ratio(s)
  int64_t clamped = 0;      // how many t were set to 0 because cos θ <= 0 or singular
};

/** Model Stock on adapters: ΔW = t·(1/N)·Σ s_i B_i A_i, cosines by factored inner products. */
ModelStockResult model_stock(const std::vector<LoraModule>& inputs, bool filter_wise);

}  // namespace lowrank
