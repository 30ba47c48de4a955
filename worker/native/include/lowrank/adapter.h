// One LoRA module's factors and the exact algebra on them (METHODS §0.4): the delta
// s·BA, its SVD without forming it, re-factoring at a target rank and scale, and
// factored inner products between modules.
#pragma once
#include <cstdint>
#include <string>

#include "lowrank/linalg.h"

namespace lowrank {

/** ΔW = scale · B A with A [r, in] (lora_A.weight) and B [out, r] (lora_B.weight). */
struct LoraModule {
  int64_t r = 0;
  int64_t in = 0;
  int64_t out = 0;
  Matrix a;  // [r, in]
  Matrix b;  // [out, r]
  double scale = 1.0;  // α/r or α/√r, kept in double as PEFT keeps `scaling`
};

/** Throws invalid_argument naming `what` unless the factor shapes agree with r/in/out. */
void check_module(const LoraModule& m, const std::string& what);

/** The dense delta scale · B A, [out, in]. */
Matrix delta_weight(const LoraModule& m);

/** SVD of scale · B A through QR(B), QR(Aᵀ) and the [r, r] core; rank <= min(r, out, in). */
Svd factored_svd(const LoraModule& m);

/** How a truncated SVD is split back into factors (METHODS §0.4). */
enum class Split { kBalanced, kBHeavy };

/**
 * Factors of rank k (zero-padded when the SVD has fewer triplets) at target scale s':
 * balanced B' = U_k diag(√(σ/s')), A' = diag(√(σ/s')) V_kᵀ; B-heavy B' = U_k diag(σ)/s', A' = V_kᵀ.
 */
LoraModule refactor(const Svd& svd, int64_t k, double target_scale, Split split);

/** ⟨s1 B1 A1, s2 B2 A2⟩_F = s1 s2 sum((B1ᵀB2) ⊙ (A1A2ᵀ)) without forming either delta. */
double factored_inner(const LoraModule& x, const LoraModule& y);

}  // namespace lowrank
