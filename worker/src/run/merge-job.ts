/**
 * AdapterMerge: fetch every input, merge with the native core (PEFT add_weighted_adapter
 * semantics, METHODS §2), write a PEFT directory, and describe it (merged_from edges with
 * weights, the method's parameters, retained energy for the svd types). With
 * intoBase.enabled the merged adapter is folded into the base weights and the output is
 * a Hugging Face model directory.
 */
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterMergeSpecDefaulted } from '@lowrank/crds/types';
import { type LoraModule, refactor } from '../native/linalg.ts';
import { COMBINATION_TYPES, type CombinationType, mergeAdapters } from '../native/merge.ts';
import { writePeftAdapter } from '../peft/adapter-dir.ts';
import { mergeIntoBase } from '../peft/merge-into-base.ts';
import { DELTA_SPACE_METHODS, type DeltaSpaceMethod, mergeDeltaSpace } from './delta-merge.ts';
import { type FetchedAdapter, fetchAdapter } from './inputs.ts';
import type { JobOutcome, RunContext } from './types.ts';

const isCombination = (m: string): m is CombinationType => (COMBINATION_TYPES as readonly string[]).includes(m);
const isDeltaSpace = (m: string): m is DeltaSpaceMethod => (DELTA_SPACE_METHODS as readonly string[]).includes(m);

interface Merged {
  combination: string;
  r: number;
  rankPattern: Record<string, number>;
  modules: Record<string, LoraModule>;
  info: Record<string, { inputs: number[]; retainedEnergy: number | null }>;
}

/** DoRA, lora_bias and mixed base-mutating inputs do not combine linearly (METHODS §2.1). */
function refuseUndefined(inputs: FetchedAdapter[], method: string): void {
  inputs.forEach((f, i) => {
    if (f.adapter.config.use_dora)
      throw new LowrankError('invalid_spec', `spec.inputs[${i}] is a DoRA adapter: ${method} would drop its magnitude vector`);
    if (f.adapter.config.lora_bias)
      throw new LowrankError('invalid_spec', `spec.inputs[${i}] has lora_bias: ${method} cannot merge the bias terms`);
  });
}

export async function runMerge(spec: AdapterMergeSpecDefaulted, ctx: RunContext): Promise<JobOutcome> {
  if (!isCombination(spec.method) && !isDeltaSpace(spec.method))
    throw new LowrankError(
      'invalid_spec',
      `spec.method: ${spec.method} is not implemented by this worker; use one of ${[...COMBINATION_TYPES, ...DELTA_SPACE_METHODS].join(', ')}`,
    );
  const inputs: FetchedAdapter[] = [];
  for (const [i, ref] of spec.inputs.entries()) {
    await ctx.reporter.progress({ stage: 'fetching inputs', step: i, total: spec.inputs.length });
    inputs.push(await fetchAdapter(ref, `spec.inputs[${i}]`, ctx.client, ctx.workDir));
  }
  const weights = spec.weights ?? spec.inputs.map(() => 1);
  if (weights.length !== inputs.length)
    throw new LowrankError('invalid_spec', `spec.weights has ${weights.length} entries for ${inputs.length} inputs; give one per input`);
  await ctx.reporter.progress({ stage: 'merging', step: 0, total: 1 }, true);
  const started = performance.now();
  let merged: Merged;
  if (isCombination(spec.method)) {
    merged = await mergeAdapters(
      inputs.map((f) => ({
        modules: f.adapter.modules,
        useRslora: !!f.adapter.config.use_rslora,
        dora: !!f.adapter.config.use_dora,
        loraBias: !!f.adapter.config.lora_bias,
      })),
      {
        combination: spec.method,
        weights,
        ...(spec.density === undefined ? {} : { density: spec.density }),
        majoritySignMethod: spec.majoritySign,
        ...(spec.targetRank === undefined ? {} : { svdRank: spec.targetRank }),
        ...(spec.svdClamp === undefined ? {} : { svdClamp: spec.svdClamp }),
        seed: spec.seed,
        parityMode: spec.parityMode,
        svdMethod: spec.svd.algorithm === 'randomized' ? 'randomized' : 'exact',
      },
    );
  } else {
    refuseUndefined(inputs, spec.method);
    if (spec.method.startsWith('mergekit_') && spec.density === undefined)
      throw new LowrankError('invalid_spec', `spec.density: ${spec.method} needs the kept fraction (e.g. 0.5)`);
    const res = mergeDeltaSpace(inputs, weights, spec);
    const r = Math.max(...Object.values(res.modules).map((m) => m.r));
    const rankPattern = Object.fromEntries(
      Object.entries(res.modules)
        .filter(([, m]) => m.r !== r)
        .map(([n, m]) => [n, m.r]),
    );
    merged = { combination: spec.method, r, rankPattern, modules: res.modules, info: res.info };
  }
  const seconds = (performance.now() - started) / 1000;
  let modules = merged.modules;
  if (spec.refactor === 'b-heavy' && spec.parityMode === 'intended')
    modules = Object.fromEntries(Object.entries(modules).map(([n, m]) => [n, refactor(m, m.r, { targetScale: 1, split: 'b_heavy' })]));
  await ctx.reporter.progress({ stage: 'writing', step: 1, total: 1 }, true);

  const first = inputs[0] as FetchedAdapter;
  const baseModel = String(first.adapter.config.base_model_name_or_path ?? 'unknown');
  const energies = Object.values(merged.info)
    .map((i) => i.retainedEnergy)
    .filter((e): e is number => e !== null);
  const adapterDir = join(ctx.workDir, 'output', 'adapter');
  writePeftAdapter(adapterDir, modules, { base_model_name_or_path: baseModel });
  const methodMetadata = {
    kind: 'merge',
    method: spec.method,
    combination: merged.combination,
    weights,
    inputs: inputs.map((f) => f.parent ?? f.parentRef),
    ...(spec.density === undefined ? {} : { density: spec.density }),
    majoritySign: spec.majoritySign,
    ...(spec.targetRank === undefined ? {} : { targetRank: spec.targetRank }),
    parityMode: spec.parityMode,
    refactor: spec.refactor,
    seed: spec.seed,
    rank: merged.r,
    rankPattern: merged.rankPattern,
    ...(isDeltaSpace(spec.method)
      ? {
          ...(spec.deltaScale === undefined ? {} : { deltaScale: spec.deltaScale }),
          ...(spec.normalize === undefined ? {} : { normalize: spec.normalize }),
          ...(spec.method === 'lego' ? { lego: spec.lego ?? {} } : {}),
          ...(spec.method === 'model_stock' ? { modelStock: spec.modelStock ?? {} } : {}),
          modules: Object.fromEntries(Object.entries(merged.info).map(([n, { inputs: _, ...rest }]) => [n, rest])),
        }
      : {}),
  };
  const metrics = {
    modules: Object.keys(modules).length,
    mergeSeconds: Math.round(seconds * 1000) / 1000,
    ...(energies.length
      ? { retainedEnergyMin: Math.min(...energies), retainedEnergyMean: energies.reduce((a, b) => a + b, 0) / energies.length }
      : {}),
  };
  const lineage = inputs.map((f, i) => ({
    relation: 'merged_from',
    ...(f.parent ? { parent: f.parent } : { parentRef: f.parentRef as string }),
    weight: weights[i] as number,
    parameters: { method: spec.method },
  }));
  if (!spec.intoBase?.enabled) return { dir: adapterDir, baseModel, method: `merge-${spec.method}`, methodMetadata, metrics, lineage };

  const base = spec.intoBase.baseModel;
  if (!base?.path)
    throw new LowrankError(
      'invalid_spec',
      'spec.intoBase.baseModel.path: merging into the base needs the base model as a local Hugging Face directory (downloads from the Hub are not done by this worker)',
    );
  const modelDir = join(ctx.workDir, 'output', 'model');
  await ctx.reporter.progress({ stage: 'merging into base', step: 0, total: 1 }, true);
  const res = mergeIntoBase(base.path, modules, modelDir, {
    dtype: spec.intoBase.dtype,
    maxShardBytes: spec.intoBase.maxShardSizeMiB * 2 ** 20,
  });
  return {
    dir: modelDir,
    baseModel: base.name ?? base.path,
    method: 'merge-into-base',
    methodMetadata: {
      ...methodMetadata,
      kind: 'merge-into-base',
      mergedTensors: res.merged.length,
      dtype: spec.intoBase.dtype,
      shards: res.shards.length,
    },
    metrics,
    lineage: [
      ...lineage,
      { relation: 'merged_from', parentRef: base.name ? `hf:${base.name}` : `file:${base.path}`, parameters: { role: 'base' } },
    ],
  };
}
