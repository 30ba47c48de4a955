/**
 * Merging LoRA adapters with PEFT's add_weighted_adapter semantics (METHODS §2.1–2.2),
 * computed by the native core off the JS thread. The default `parityMode: 'intended'`
 * folds every scaling into the factors (lora_alpha = r, use_rslora = false, balanced
 * factors for the svd types); `'peft'` reproduces what PEFT 0.21.2 writes, for parity
 * tests. Bad arguments throw TypeError; refused merges (unequal ranks for the
 * factor-space types, DoRA, lora_bias) and numerical refusals reject with
 * LowrankError('invalid_request').
 */

import { checkModule, type LoraModule, type Seed } from './linalg.ts';
import { loadNative } from './load.ts';
import { toLowrankError } from './native-error.ts';

export const COMBINATION_TYPES = [
  'linear',
  'cat',
  'svd',
  'ties',
  'ties_svd',
  'dare_linear',
  'dare_ties',
  'dare_linear_svd',
  'dare_ties_svd',
  'magnitude_prune',
  'magnitude_prune_svd',
] as const;
export type CombinationType = (typeof COMBINATION_TYPES)[number];

/** One input adapter: its modules by fully qualified path, each with its own rank and scale. */
export interface MergeInput {
  modules: Record<string, LoraModule>;
  /** Read only in parity mode 'peft' (PEFT's merged config inherits the first input's flag). */
  useRslora?: boolean;
  /** DoRA and lora_bias inputs are refused (METHODS §2.1). */
  dora?: boolean;
  loraBias?: boolean;
}

export interface MergeOptions {
  combination: CombinationType;
  /** One weight per input. */
  weights: number[];
  /** Kept fraction for ties/dare/magnitude types, in [0, 1] ((0, 1] for DARE). */
  density?: number;
  majoritySignMethod?: 'total' | 'frequency';
  /** svd types: output rank; default the largest input rank. */
  svdRank?: number;
  /** svd types: quantile in [0, 1] at which factor entries are clamped (PEFT's svd_clamp). */
  svdClamp?: number;
  /** DARE masks come from Philox(seed, stream of module/tensor/input); see dareMask(). */
  seed?: Seed;
  parityMode?: 'intended' | 'peft';
  /**
   * Dense svd types (ties_svd, dare_*_svd, magnitude_prune_svd): 'exact' thin SVD (default,
   * double precision) or 'randomized' (p = 10, niter = 4, seeded by `seed`): ~100x faster on
   * 7B-shaped modules, within METHODS §8.1's randomized tolerance where the spectrum decays.
   */
  svdMethod?: 'exact' | 'randomized';
  /** Explicit DARE keep-masks by dareMaskKey(); tests inject these. */
  dareMasks?: Record<string, Uint8Array>;
}

export interface ModuleMergeInfo {
  /** Indices of the inputs that had this module. */
  inputs: number[];
  rank: number;
  /** svd types: the fraction of the combined delta's energy kept at the output rank. */
  retainedEnergy: number | null;
}

export interface MergedAdapter {
  /** The type applied: a single input is always merged as 'linear', as in PEFT. */
  combination: CombinationType;
  /** Config r (the largest module rank), lora_alpha and use_rslora to write. */
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  /** Modules whose rank differs from r; alpha_pattern = rank_pattern keeps s = 1 (intended mode). */
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  modules: Record<string, LoraModule>;
  info: Record<string, ModuleMergeInfo>;
}

type NativeResult = Omit<MergedAdapter, 'rankPattern' | 'alphaPattern'>;

interface MergeNative {
  mergeAdapters(inputs: MergeInput[], options: MergeOptions): Promise<NativeResult>;
}

const native = (): MergeNative => loadNative() as unknown as MergeNative;

/** The key of an explicit DARE mask: tensor 'A' | 'B' (factor-space types) or 'delta' (svd types). */
export function dareMaskKey(module: string, tensor: 'A' | 'B' | 'delta', input: number): string {
  return `${module}|${tensor}|${input}`;
}

function validate(inputs: MergeInput[], o: MergeOptions): void {
  if (!Array.isArray(inputs) || inputs.length === 0) throw new TypeError('inputs must be a non-empty array of adapters');
  if (!COMBINATION_TYPES.includes(o.combination)) {
    throw new TypeError(`combination must be one of ${COMBINATION_TYPES.join(', ')}; got ${String(o.combination)}`);
  }
  if (!Array.isArray(o.weights) || o.weights.length !== inputs.length || !o.weights.every(Number.isFinite)) {
    throw new TypeError(`weights must be ${inputs.length} finite numbers, one per input`);
  }
  inputs.forEach((input, i) => {
    if (typeof input?.modules !== 'object' || input.modules === null) throw new TypeError(`inputs[${i}].modules must be an object`);
    for (const [name, m] of Object.entries(input.modules)) checkModule(m, `inputs[${i}].modules['${name}']`);
  });
  if (o.density !== undefined && (typeof o.density !== 'number' || !(o.density >= 0 && o.density <= 1))) {
    throw new TypeError('density must be a number in [0, 1]');
  }
  if (o.majoritySignMethod !== undefined && o.majoritySignMethod !== 'total' && o.majoritySignMethod !== 'frequency') {
    throw new TypeError("majoritySignMethod must be 'total' or 'frequency'");
  }
  if (o.svdRank !== undefined && !(Number.isSafeInteger(o.svdRank) && o.svdRank >= 1))
    throw new TypeError('svdRank must be a positive integer');
  if (o.svdClamp !== undefined && !(o.svdClamp >= 0 && o.svdClamp <= 1)) throw new TypeError('svdClamp must be a quantile in [0, 1]');
  if (o.parityMode !== undefined && o.parityMode !== 'intended' && o.parityMode !== 'peft') {
    throw new TypeError("parityMode must be 'intended' or 'peft'");
  }
  if (
    o.seed !== undefined &&
    (typeof o.seed === 'bigint' ? o.seed < 0n || o.seed >= 1n << 64n : !(Number.isSafeInteger(o.seed) && o.seed >= 0))
  ) {
    throw new TypeError('seed must be a non-negative integer below 2^64');
  }
  for (const [k, v] of Object.entries(o.dareMasks ?? {})) {
    if (!(v instanceof Uint8Array)) throw new TypeError(`dareMasks['${k}'] must be a Uint8Array`);
  }
}

/** Merges N adapters module by module; a module absent from some inputs merges over those that have it. */
export async function mergeAdapters(inputs: MergeInput[], options: MergeOptions): Promise<MergedAdapter> {
  validate(inputs, options);
  let res: NativeResult;
  try {
    res = await native().mergeAdapters(inputs, options);
  } catch (err) {
    throw toLowrankError(err);
  }
  const rankPattern: Record<string, number> = {};
  for (const [name, m] of Object.entries(res.modules)) if (m.r !== res.r) rankPattern[name] = m.r;
  const intended = (options.parityMode ?? 'intended') === 'intended';
  return { ...res, rankPattern, alphaPattern: intended ? { ...rankPattern } : {} };
}
