// The tensor operators behind PEFT's merges (peft.utils.merge_utils; METHODS §2.2, §7 P2,
// P9, P10), applied to a stack of N same-shaped tensors t_i with weights λ_i.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lowrank/linalg.h"

namespace lowrank {

enum class SignMethod { kTotal, kFrequency };

struct LoraModule;  // adapter.h

/**
 * Keep-mask of magnitude pruning: the k = int(density · n) largest |t| (k computed as
 * Python does, a double product truncated), ties broken by the lowest flat index.
 * density >= 1 keeps everything (PEFT's prune() returns early).
 */
std::vector<uint8_t> magnitude_mask(const float* t, int64_t n, double density);

/** How many entries magnitude_mask keeps: int(density · n), or n for density >= 1. */
int64_t magnitude_keep(double density, int64_t n);

/** DARE keep-mask from Philox: keep element j iff uniform(seed, stream, j) < density. */
std::vector<uint8_t> dare_mask(uint64_t seed, uint64_t stream, int64_t n, double density);

/** The stream of one DARE mask: module, which tensor ("A", "B" or "delta"), input index. */
uint64_t dare_stream(const std::string& module, const std::string& tensor, int64_t input);

/** t ⊙ mask (magnitude pruning). */
void apply_mask(Matrix* t, const std::vector<uint8_t>& mask);

/** DARE: t ⊙ mask / density (no-op for density >= 1, as in PEFT). */
void apply_dare(Matrix* t, const std::vector<uint8_t>& mask, double density);

/** Σ λ_i t_i, accumulated in input order. */
Matrix weighted_sum(const std::vector<Matrix>& stack, const std::vector<float>& weights);

/**
 * TIES election and disjoint mean on an already pruned stack: the sign is elected on the
 * unweighted stack (total: sign Σ t_i; frequency: sign Σ sign t_i; 0 counts as +),
 * zeros never agree, result Σ λ_i t_i keep_i / max(1, Σ keep_i).
 */
Matrix ties_merge(const std::vector<Matrix>& stack, const std::vector<float>& weights, SignMethod method);

/** One input of a dense merge stage: ΔW = scale · B A of `module`, weighted. */
struct DenseMergeTerm {
  const LoraModule* module = nullptr;
  float weight = 0.0f;
  const std::vector<uint8_t>* dare_mask = nullptr;  // an explicit keep mask, else Philox(seed, dare_stream)
  uint64_t dare_stream = 0;
};

/**
 * The dense stage of a PEFT svd-type merge (merge.cc): each ΔW_i pruned (magnitude: keep
 * int(density·n); DARE: Philox mask and 1/density, when density < 1), then combined
 * (weighted_sum, or ties_merge when `ties`).
 */
struct DenseMergeRequest {
  std::vector<DenseMergeTerm> terms;
  bool magnitude = false, dare = false, ties = false;
  int64_t keep = 0;  // magnitude: entries kept per ΔW (magnitude_keep)
  double density = 1.0;
  SignMethod sign = SignMethod::kTotal;
  uint64_t seed = 0;
};

/** What a dense merge provider did with a request. */
enum class DenseMergeResult { kNotTaken, kMixed, kSvd };

/**
 * Another backend's dense merge stage (the CUDA one's, the deltas never leaving the device):
 * kSvd with the combined matrix's thin SVD in double in `svd` (before the sign rule; only
 * when `svd` is not null), kMixed with the combined matrix in `mixed`, or kNotTaken to leave
 * the request to the CPU (too small to be worth the trip). Throws on a device error.
 */
using DenseMergeProvider = std::function<DenseMergeResult(const DenseMergeRequest&, Matrix* mixed, Svd* svd)>;
/** Installs the provider merge_svd tries first (the addon, once, when the CUDA backend is chosen). */
void set_dense_merge_provider(DenseMergeProvider f);
/** The installed provider, or an empty function. */
const DenseMergeProvider& dense_merge_provider();

/** torch.quantile(x, q) with linear interpolation between order statistics. */
float quantile(std::vector<float> x, double q);

}  // namespace lowrank
