// Diagnostics of one module from its factored SVD (METHODS §6). Sums run in double, in
// index order, so the numbers are identical across runs.
#include "lowrank/spectra.h"

#include <cmath>
#include <limits>

namespace lowrank {

namespace {

void scan_factor(const Matrix& f, Spectra* s, double* sumsq) {
  for (float x : f.data) {
    if (!std::isfinite(x)) {
      s->nonfinite++;
      continue;
    }
    double v = x;
    *sumsq += v * v;
    s->maxabs = std::max(s->maxabs, std::fabs(v));
  }
}

}  // namespace

// A [r, in], B [out, r], scale -> σ [min(r, out, in)] and the scalars derived from it.
Spectra module_spectra(const LoraModule& m) {
  check_module(m, "spectra");
  Spectra s;
  double sa = 0, sb = 0;
  scan_factor(m.a, &s, &sa);
  scan_factor(m.b, &s, &sb);
  s.norm_a = std::sqrt(sa);
  s.norm_b = std::sqrt(sb);
  s.balance = s.norm_a > 0 ? s.norm_b / s.norm_a : std::numeric_limits<double>::quiet_NaN();
  if (s.nonfinite > 0) {
    double nan = std::numeric_limits<double>::quiet_NaN();
    s.fro = s.spec = s.nuc = s.erank = s.srank = nan;
    s.k_at.fill(-1);
    return s;
  }
  s.sigma = factored_svd(m).s;
  double sum = 0, sumsq = 0;
  for (float x : s.sigma) {
    sum += x;
    sumsq += static_cast<double>(x) * x;
  }
  s.fro = std::sqrt(sumsq);
  s.spec = s.sigma.empty() ? 0.0 : s.sigma[0];
  s.nuc = sum;
  s.energy.resize(s.sigma.size());
  double run = 0;
  for (size_t i = 0; i < s.sigma.size(); i++) {
    run += static_cast<double>(s.sigma[i]) * s.sigma[i];
    s.energy[i] = sumsq > 0 ? run / sumsq : 0.0;
  }
  for (size_t t = 0; t < kEnergyTaus.size(); t++) {
    s.k_at[t] = 0;
    if (sumsq <= 0) continue;
    // the last entry is forced to 1 so rounding in the running sum never leaves k unset
    size_t k = 0;
    while (k + 1 < s.energy.size() && s.energy[k] < kEnergyTaus[t]) k++;
    s.k_at[t] = static_cast<int64_t>(k + 1);
  }
  if (sum > 0) {
    double h = 0;
    for (float x : s.sigma) {
      double p = x / sum;
      if (p > 0) h -= p * std::log(p);
    }
    s.erank = std::exp(h);
    s.srank = sumsq / (s.spec * s.spec);
  }
  return s;
}

}  // namespace lowrank
