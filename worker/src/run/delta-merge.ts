/**
 * The AdapterMerge methods that are not PEFT's: mergekit semantics on full deltas
 * (task_arithmetic, mergekit_ties, mergekit_dare_linear, mergekit_dare_ties; METHODS §2.3),
 * Model Stock (§2.4) and LoRA-LEGO (§2.5). Every one still outputs an adapter: dense mixes
 * are re-factored at targetRank by (randomized) SVD, with the retained energy recorded.
 * A module absent from some inputs merges over those that have it (as PEFT).
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterMergeSpecDefaulted } from '@lowrank/crds/types';
import { type DeltaMethod, factorDense, legoMerge, mergeDeltas, modelStock } from '../native/delta.ts';
import { gemm, type LoraModule, refactor } from '../native/linalg.ts';
import type { FetchedAdapter } from './inputs.ts';

export const DELTA_SPACE_METHODS = [
  'task_arithmetic',
  'mergekit_ties',
  'mergekit_dare_linear',
  'mergekit_dare_ties',
  'model_stock',
  'lego',
] as const;
export type DeltaSpaceMethod = (typeof DELTA_SPACE_METHODS)[number];

export interface DeltaModuleInfo {
  inputs: number[];
  rank: number;
  retainedEnergy: number | null;
  [k: string]: unknown;
}

export interface DeltaSpaceResult {
  modules: Record<string, LoraModule>;
  info: Record<string, DeltaModuleInfo>;
}

const MERGEKIT: Record<string, DeltaMethod> = {
  task_arithmetic: 'task_arithmetic',
  mergekit_ties: 'ties',
  mergekit_dare_linear: 'dare_linear',
  mergekit_dare_ties: 'dare_ties',
};

const split = (spec: AdapterMergeSpecDefaulted) => (spec.refactor === 'b-heavy' ? 'b_heavy' : 'balanced') as 'b_heavy' | 'balanced';

/** Module paths over all inputs, each with the indices of the inputs that have it. */
function moduleTable(inputs: FetchedAdapter[]): Map<string, number[]> {
  const table = new Map<string, number[]>();
  inputs.forEach((f, i) => {
    for (const name of Object.keys(f.adapter.modules)) table.set(name, [...(table.get(name) ?? []), i]);
  });
  return new Map([...table].sort(([a], [b]) => (a < b ? -1 : 1)));
}

function denseDelta(m: LoraModule) {
  return gemm({ rows: m.out, cols: m.r, data: m.B }, { rows: m.r, cols: m.in, data: m.A }, { alpha: m.scale });
}

export function mergeDeltaSpace(inputs: FetchedAdapter[], weights: number[], spec: AdapterMergeSpecDefaulted): DeltaSpaceResult {
  const modules: Record<string, LoraModule> = {};
  const info: Record<string, DeltaModuleInfo> = {};
  const seed = spec.seed ?? 0;
  for (const [name, idx] of moduleTable(inputs)) {
    const mods = idx.map((i) => inputs[i]?.adapter.modules[name] as LoraModule);
    const w = idx.map((i) => weights[i] as number);
    const maxRank = Math.max(...mods.map((m) => m.r));
    const k = spec.targetRank ?? maxRank;
    const dm = MERGEKIT[spec.method];
    if (dm) {
      const mix = mergeDeltas(mods.map(denseDelta), {
        method: dm,
        weights: w,
        ...(spec.density === undefined ? {} : { density: spec.density }),
        signMethod: spec.majoritySign,
        lambda: spec.deltaScale ?? 1,
        ...(spec.normalize === undefined ? {} : { normalize: spec.normalize }),
        seed,
        module: name,
      });
      const f = factorDense(mix, {
        rank: Math.min(k, mix.rows, mix.cols),
        randomized: spec.svd.algorithm === 'randomized',
        ...(spec.svd.oversampling === undefined ? {} : { oversample: spec.svd.oversampling }),
        ...(spec.svd.powerIterations === undefined ? {} : { niter: spec.svd.powerIterations }),
        seed,
        purpose: `rsvd:${name}`,
        split: split(spec),
      });
      modules[name] = f.module;
      info[name] = { inputs: idx, rank: f.module.r, retainedEnergy: f.retainedEnergy };
    } else if (spec.method === 'model_stock') {
      if (mods.length < 2)
        throw new LowrankError(
          'invalid_spec',
          `spec.method: model_stock needs every module in at least 2 inputs; ${name} is only in input ${idx[0]}`,
        );
      const r = modelStock(mods, spec.modelStock?.filterWise ?? false);
      const cat = r.module;
      const out = spec.targetRank === undefined ? cat : refactor(cat, Math.min(k, cat.r), { targetScale: 1, split: split(spec) });
      modules[name] = out;
      const cosMean = r.cos.reduce((a, b) => a + b, 0) / r.cos.length;
      const tMean = r.t.reduce((a, b) => a + b, 0) / r.t.length;
      info[name] = { inputs: idx, rank: out.r, retainedEnergy: null, cos: cosMean, t: tMean, clamped: r.clamped };
    } else if (spec.method === 'lego') {
      const r = legoMerge(mods, w, {
        k: Math.min(
          k,
          mods.reduce((n, m) => n + m.r, 0),
        ),
        distance: spec.lego?.distance ?? 'cosine',
        reweightParameters: spec.lego?.reweightParameters ?? true,
        reweightOutput: spec.lego?.reweightOutput ?? true,
        maxIterations: spec.lego?.maxIterations ?? 100,
        seed,
        module: name,
      });
      modules[name] = r.module;
      info[name] = { inputs: idx, rank: r.module.r, retainedEnergy: null, clusterSizes: r.sizes, gamma: r.gamma, iterations: r.iterations };
    } else {
      throw new LowrankError('invalid_spec', `spec.method: ${spec.method} is not a delta-space method`);
    }
  }
  return { modules, info };
}
