/**
 * Adapter rank reduction (METHODS §3.1): per module, the factored SVD of s·BA (no dense
 * ΔW), a rank chosen by policy, and a re-factoring at scale 1 (balanced by default), so the
 * result is an ordinary LoRA with lora_alpha = r per module.
 *
 * Policies over the singular values σ of each module's ΔW:
 *   fixed k            k (clipped to the module's rank);
 *   energy τ           k = 1 + min{i : Σ_{j≤i} σ_j² ≥ τ Σσ²}, PEFT's _find_cutoff_index;
 *   budget P params    a rank of module ℓ costs out_ℓ + in_ℓ; take the largest σ²/(out+in)
 *                      across modules until P is spent (a prefix per module), within
 *                      [minRank, maxRank];
 *   serve slot         caps every k (vLLM's max_lora_rank); combines with the others, and
 *                      alone means "fit the slot".
 */
import { factoredSvd, type LoraModule, refactor, type Split } from './linalg.ts';

export type RankPolicy = { fixed: number } | { energy: number } | { budget: { params: number; minRank?: number; maxRank?: number } };

export interface ReduceOptions {
  policy?: RankPolicy;
  /** Serving rank limit, e.g. 16 for vLLM --max-lora-rank 16. */
  serveMaxRank?: number;
  split?: Split;
}

export interface ModuleReport {
  rankBefore: number;
  rankAfter: number;
  /** E(k) = Σ_{i≤k} σ² / Σ σ². */
  energyKept: number;
  /** ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F = √(1 − E(k)). */
  relError: number;
  sigma: number[];
}

/**
 * PEFT's rule: the smallest prefix whose energy reaches τ, with PEFT's arithmetic so the
 * integer matches exactly, even at τ = 1: squares in float32, torch's CPU cumsum
 * (float64 accumulator, each partial sum rounded to float32), comparison in float32.
 */
export function energyCutoff(sigma: ArrayLike<number>, tau: number): number {
  const f = Math.fround;
  const cs = new Float32Array(sigma.length);
  let acc = 0;
  for (let i = 0; i < sigma.length; i++) {
    acc += f(f(sigma[i] as number) * f(sigma[i] as number));
    cs[i] = acc;
  }
  const cutoff = f(tau * (cs[cs.length - 1] ?? 0));
  for (let i = 0; i < cs.length; i++) if ((cs[i] as number) >= cutoff) return i + 1;
  return sigma.length;
}

interface Spectrum {
  name: string;
  sigma: number[];
  cost: number;
  rank: number;
}

function budgetRanks(spectra: Spectrum[], params: number, minRank: number, maxRank: number): Map<string, number> {
  const ranks = new Map(spectra.map((s) => [s.name, Math.min(minRank, s.rank)]));
  let spent = spectra.reduce((n, s) => n + (ranks.get(s.name) as number) * s.cost, 0);
  // Candidates: the next singular value of each module, by value per parameter; ties by name.
  const next = () => {
    let best: Spectrum | undefined;
    let bestValue = -1;
    for (const s of spectra) {
      const k = ranks.get(s.name) as number;
      if (k >= Math.min(maxRank, s.rank) || spent + s.cost > params) continue;
      const value = (s.sigma[k] as number) ** 2 / s.cost;
      if (value > bestValue || (value === bestValue && best && s.name < best.name)) {
        best = s;
        bestValue = value;
      }
    }
    return best;
  };
  for (let s = next(); s; s = next()) {
    ranks.set(s.name, (ranks.get(s.name) as number) + 1);
    spent += s.cost;
  }
  return ranks;
}

export function chooseRanks(spectra: Spectrum[], options: ReduceOptions): Map<string, number> {
  const { policy, serveMaxRank } = options;
  if (!policy && serveMaxRank === undefined)
    throw new TypeError('give a rank policy (fixed, energy or budget), a serving rank limit, or both');
  if (serveMaxRank !== undefined && (!Number.isInteger(serveMaxRank) || serveMaxRank < 1))
    throw new TypeError('serveMaxRank must be a positive integer');
  let ranks: Map<string, number>;
  if (!policy) ranks = new Map(spectra.map((s) => [s.name, s.rank]));
  else if ('fixed' in policy) {
    if (!Number.isInteger(policy.fixed) || policy.fixed < 1) throw new TypeError('fixed rank must be a positive integer');
    ranks = new Map(spectra.map((s) => [s.name, Math.min(policy.fixed, s.rank)]));
  } else if ('energy' in policy) {
    if (!(policy.energy > 0 && policy.energy <= 1)) throw new TypeError('energy threshold must be in (0, 1]');
    ranks = new Map(spectra.map((s) => [s.name, energyCutoff(s.sigma, policy.energy)]));
  } else {
    const { params, minRank = 1, maxRank = Number.MAX_SAFE_INTEGER } = policy.budget;
    if (!(params > 0) || minRank < 1 || maxRank < minRank) throw new TypeError('budget needs params > 0 and 1 <= minRank <= maxRank');
    ranks = budgetRanks(spectra, params, minRank, maxRank);
  }
  if (serveMaxRank !== undefined) for (const [name, k] of ranks) ranks.set(name, Math.min(k, serveMaxRank));
  return ranks;
}

/** Reduces every module; the outputs have scale 1 (fold all scalings: write lora_alpha = r). */
export function reduceRank(
  modules: Record<string, LoraModule>,
  options: ReduceOptions,
): { modules: Record<string, LoraModule>; report: Record<string, ModuleReport> } {
  const spectra: Spectrum[] = Object.entries(modules).map(([name, m]) => ({
    name,
    sigma: Array.from(factoredSvd(m).s),
    cost: m.out + m.in,
    rank: m.r,
  }));
  const ranks = chooseRanks(spectra, options);
  const out: Record<string, LoraModule> = {};
  const report: Record<string, ModuleReport> = {};
  for (const s of spectra) {
    const k = Math.max(1, ranks.get(s.name) as number);
    const total = s.sigma.reduce((n, x) => n + x * x, 0);
    const kept = s.sigma.slice(0, k).reduce((n, x) => n + x * x, 0);
    const energyKept = total > 0 ? kept / total : 1;
    out[s.name] = refactor(modules[s.name] as LoraModule, k, { targetScale: 1, split: options.split ?? 'balanced' });
    report[s.name] = { rankBefore: s.rank, rankAfter: k, energyKept, relError: Math.sqrt(Math.max(0, 1 - energyKept)), sigma: s.sigma };
  }
  return { modules: out, report };
}
