// Per-module diagnostics carried by every adapter version (METHODS §6), computed from
// the factors through the factored SVD: no [out, in] matrix is formed.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "lowrank/adapter.h"

namespace lowrank {

/** The energy thresholds τ of k_at[τ]. */
constexpr std::array<double, 4> kEnergyTaus = {0.5, 0.9, 0.95, 0.99};

struct Spectra {
  std::vector<float> sigma;            // all min(r, out, in) singular values of s·BA, descending
  std::vector<double> energy;          // energy[k-1] = E(k) = Σ_{i<=k} σ² / Σ σ²
  std::array<int64_t, 4> k_at{};       // smallest k with E(k) >= τ (0 when ΔW = 0)
  double fro = 0, spec = 0, nuc = 0;   // √Σσ², σ1, Σσ
  double erank = 0;                    // exp(−Σ p ln p), p = σ/Σσ (0 when ΔW = 0)
  double srank = 0;                    // Σσ²/σ1² (0 when ΔW = 0)
  double norm_a = 0, norm_b = 0;       // ‖A‖_F, ‖B‖_F
  double balance = 0;                  // ‖B‖_F/‖A‖_F (NaN when ‖A‖_F = 0)
  double maxabs = 0;                   // largest |entry| of A and B
  int64_t nonfinite = 0;               // NaN/Inf count in A and B; if > 0 nothing else is computed
};

Spectra module_spectra(const LoraModule& m);

}  // namespace lowrank
