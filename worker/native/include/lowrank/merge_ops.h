// The tensor operators behind PEFT's merges (peft.utils.merge_utils; METHODS §2.2, §7 P2,
// P9, P10), applied to a stack of N same-shaped tensors t_i with weights λ_i.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/linalg.h"

namespace lowrank {

enum class SignMethod { kTotal, kFrequency };

/**
 * Keep-mask of magnitude pruning: the k = int(density · n) largest |t| (k computed as
 * Python does, a double product truncated), ties broken by the lowest flat index.
 * density >= 1 keeps everything (PEFT's prune() returns early).
 */
std::vector<uint8_t> magnitude_mask(const float* t, int64_t n, double density);

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

/** torch.quantile(x, q) with linear interpolation between order statistics. */
float quantile(std::vector<float> x, double q);

}  // namespace lowrank
