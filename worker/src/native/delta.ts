/**
 * Delta-space merges (METHODS §2.3–2.5), computed by the native core one module at a time:
 * mergekit's task arithmetic, TIES and DARE on full deltas (fp32 arithmetic in mergekit's
 * order), Model Stock on adapters by factored cosines, LoRA-LEGO rank-wise k-means, and the
 * truncated-SVD factoring that turns any dense delta into an adapter (so every merge still
 * outputs an adapter). Bad arguments throw TypeError; numerical refusals reject with
 * LowrankError('invalid_request').
 */
import { checkMatrix, checkModule, type LoraModule, type Matrix, type Seed, type Split } from './linalg.ts';
import { loadNative } from './load.ts';
import { callNative } from './native-error.ts';

export const DELTA_METHODS = ['task_arithmetic', 'ties', 'dare_linear', 'dare_ties'] as const;
export type DeltaMethod = (typeof DELTA_METHODS)[number];

export interface DeltaMergeOptions {
  method: DeltaMethod;
  /** w_i, one per delta. */
  weights: number[];
  /** ties: keep the max(1, int(d·n)) largest |δ|; dare: Bernoulli(d). */
  density?: number;
  /** mergekit 'sum' (total) or 'count' (frequency), elected on the weighted deltas. */
  signMethod?: 'total' | 'frequency';
  /** λ: result = λ · mix. */
  lambda?: number;
  /** Divide by Σ w_i (keep_i); default mergekit's: on for ties, off otherwise. */
  normalize?: boolean;
  /** DARE L1 rescale; default on for dare_*. */
  rescale?: boolean;
  /** DARE masks: Philox(seed, stream "dare:<module>:mk:<input>"). */
  seed?: Seed;
  module?: string;
  /** Explicit DARE keep-masks, one per input (tests inject these). */
  masks?: Uint8Array[];
}

export interface FactorOptions {
  /** Fixed rank k, or */
  rank?: number;
  /** PEFT's energy rule τ ∈ (0, 1] (exact SVD only). */
  energy?: number;
  /** Cap (e.g. a serving slot). */
  maxRank?: number;
  /** Randomized SVD (fixed rank only) instead of the exact f64 thin SVD. */
  randomized?: boolean;
  oversample?: number;
  niter?: number;
  seed?: Seed;
  /** Names the Philox stream of the test matrix ("rsvd:<module>"). */
  purpose?: string;
  split?: Split;
}

export interface FactorResult {
  /** Rank k at scale 1. */
  module: LoraModule;
  /** The singular values computed (all of them with the exact SVD). */
  sigma: Float32Array;
  /** Σ_{i≤k} σ² / ‖M‖_F². */
  retainedEnergy: number;
  /** √(1 − E(k)). */
  relError: number;
}

export interface ModelStockResult {
  /** Exact cat of the inputs with B rows scaled by t/N, scale 1 (rank Σ r_i). */
  module: LoraModule;
  cos: number[];
  t: number[];
  /** t set to 0 because cos θ ≤ 0 (ours; mergekit would extrapolate). */
  clamped: number;
}

export interface LegoOptions {
  /** Clusters = output rank; default the largest input rank. */
  k?: number;
  distance?: 'cosine' | 'euclidean';
  reweightParameters?: boolean;
  reweightOutput?: boolean;
  maxIterations?: number;
  seed?: Seed;
  module?: string;
}

export interface LegoResult {
  module: LoraModule;
  assignment: number[];
  sizes: number[];
  gamma: number;
  iterations: number;
}

interface DeltaNative {
  mergeDeltas(deltas: Matrix[], options: DeltaMergeOptions): Matrix;
  factorDense(m: Matrix, options: FactorOptions): FactorResult;
  modelStock(inputs: LoraModule[], filterWise: boolean): ModelStockResult;
  legoMerge(inputs: LoraModule[], weights: number[], options: LegoOptions): LegoResult;
}

const native = (): DeltaNative => loadNative() as unknown as DeltaNative;

const finite = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

/** λ · mix of N same-shaped deltas with mergekit semantics (the base is not added). */
export function mergeDeltas(deltas: Matrix[], o: DeltaMergeOptions): Matrix {
  if (!Array.isArray(deltas) || deltas.length === 0) throw new TypeError('deltas must be a non-empty array of matrices');
  for (const [i, d] of deltas.entries()) checkMatrix(d, `deltas[${i}]`);
  if (!DELTA_METHODS.includes(o.method)) throw new TypeError(`method must be one of ${DELTA_METHODS.join(', ')}`);
  if (!Array.isArray(o.weights) || o.weights.length !== deltas.length || !o.weights.every(finite))
    throw new TypeError(`weights must be ${deltas.length} finite numbers, one per delta`);
  if (o.method !== 'task_arithmetic' && !(finite(o.density) && o.density >= 0 && o.density <= 1))
    throw new TypeError(`${o.method} needs density in [0, 1]`);
  if (o.lambda !== undefined && !finite(o.lambda)) throw new TypeError('lambda must be a finite number');
  if (o.masks && (o.masks.length !== deltas.length || !o.masks.every((m) => m instanceof Uint8Array)))
    throw new TypeError('masks must be one Uint8Array per delta');
  return callNative(() => native().mergeDeltas(deltas, o));
}

/** A dense [out, in] matrix as a rank-k LoRA at scale 1. */
export function factorDense(m: Matrix, o: FactorOptions): FactorResult {
  checkMatrix(m, 'm');
  if (o.rank === undefined && o.energy === undefined) throw new TypeError('give rank or energy');
  if (o.rank !== undefined && !(Number.isSafeInteger(o.rank) && o.rank >= 1)) throw new TypeError('rank must be a positive integer');
  if (o.energy !== undefined && !(o.energy > 0 && o.energy <= 1)) throw new TypeError('energy must be in (0, 1]');
  if (o.maxRank !== undefined && !(Number.isSafeInteger(o.maxRank) && o.maxRank >= 1))
    throw new TypeError('maxRank must be a positive integer');
  return callNative(() => native().factorDense(m, o));
}

/** Model Stock over N >= 2 adapters' modules (METHODS §2.4). */
export function modelStock(inputs: LoraModule[], filterWise = false): ModelStockResult {
  if (!Array.isArray(inputs) || inputs.length < 2) throw new TypeError('model_stock needs at least 2 modules');
  for (const [i, m] of inputs.entries()) checkModule(m, `inputs[${i}]`);
  return callNative(() => native().modelStock(inputs, filterWise));
}

/** LoRA-LEGO rank-wise clustering of one module over N adapters (METHODS §2.5). */
export function legoMerge(inputs: LoraModule[], weights: number[], o: LegoOptions = {}): LegoResult {
  if (!Array.isArray(inputs) || inputs.length === 0) throw new TypeError('lego needs at least 1 module');
  for (const [i, m] of inputs.entries()) checkModule(m, `inputs[${i}]`);
  if (!Array.isArray(weights) || weights.length !== inputs.length || !weights.every(finite))
    throw new TypeError(`weights must be ${inputs.length} finite numbers`);
  if (o.k !== undefined && !(Number.isSafeInteger(o.k) && o.k >= 1)) throw new TypeError('k must be a positive integer');
  if (o.distance !== undefined && o.distance !== 'cosine' && o.distance !== 'euclidean')
    throw new TypeError("distance must be 'cosine' or 'euclidean'");
  return callNative(() => native().legoMerge(inputs, weights, o));
}
