/**
 * CompressionJob modes beyond adapter rank reduction (METHODS §3.1, §3.3–3.5):
 *   extract   an adapter from a full fine-tune: truncated SVD of W_ft − W_base per linear
 *             (ranks from rankPolicy fixed/energy, capped by a serving slot) — extracted_from;
 *   base-svd  W ≈ W2·W1 per linear; the output model holds the dense W2·W1 (loads anywhere)
 *             and lowrank_factors.safetensors with W2, W1 — compressed_from;
 *   base-cur  W ≈ C·U·R with DEIM-selected actual columns/rows — compressed_from;
 *   quantize  adapter factors to int8 with one scale per row — quantized_from;
 *   eora      a rank-r LoRA compensating W − Ŵ (Ŵ: RTN here, or a given compressed model),
 *             on the compressed base — compressed_from.
 * Calibration activations (EoRA, activation-aware base-svd, activation-weighted CUR) are read
 * precomputed from a .safetensors file; from calibration text they would need a forward pass
 * of the base, which this worker cannot run yet, and are refused with that reason.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { CompressionJobSpecDefaulted } from '@lowrank/crds/types';
import { curDecompose, eora, rtnQuantize } from '../native/compress-base.ts';
import { type FactorOptions, factorDense } from '../native/delta.ts';
import { gemm, type LoraModule, type Matrix } from '../native/linalg.ts';
import { readSafetensors, tensorToFloat32, type WritableTensor } from '../native/safetensors.ts';
import { writePeftAdapter } from '../peft/adapter-dir.ts';
import { writeQuantizedAdapter } from '../peft/quantized-adapter.ts';
import { fetchAdapter } from './inputs.ts';
import { fetchModel, LINEAR_NAMES, linearKeys, readModelWeights, type Weight, writeModelDir } from './models.ts';
import type { JobOutcome, RunContext } from './types.ts';

type Spec = CompressionJobSpecDefaulted;
const bad = (msg: string) => new LowrankError('invalid_spec', msg);
const modulePath = (key: string) => key.replace(/\.weight$/, '');
const asMatrix = (w: Weight): Matrix => ({ rows: w.shape[0] as number, cols: w.shape[1] as number, data: w.data });
const round = (x: number) => Math.round(x * 1e6) / 1e6;
const fullRank = (w: Record<string, Weight>, keys: string[]) => Math.max(...keys.map((k) => Math.min(...(w[k] as Weight).shape)));

/** The registry's compression summary: ranks before/after, worst energy kept and relative error. */
function summary(ranksBefore: number, ranksAfter: number, relErrors: number[], energies?: number[]) {
  const relError = Math.max(0, ...relErrors);
  const energyKept = energies ? Math.min(1, ...energies) : 1 - relError ** 2;
  return { ranksBefore, ranksAfter, energyKept: Math.min(1, Math.max(0, energyKept)), relError };
}

/** Rank choice for dense inputs: fixed or energy, capped by serve / servingMaxRank. */
function denseRank(spec: Spec): Pick<FactorOptions, 'rank' | 'energy' | 'maxRank'> {
  const p = spec.rankPolicy ?? {};
  if (p.budget) throw bad('spec.rankPolicy.budget: the parameter budget applies to adapters; use fixed or energy for dense weights');
  const caps = [p.serve?.maxRank, spec.servingMaxRank].filter((x): x is NonNullable<typeof x> => x !== undefined);
  const cap = caps.length ? { maxRank: Math.min(...caps) } : {};
  if (p.fixed) return { rank: p.fixed.rank, ...cap };
  if (p.energy) return { energy: p.energy.threshold, ...cap };
  if (cap.maxRank) return { rank: cap.maxRank };
  throw bad(`spec.rankPolicy: ${spec.mode} needs fixed or energy (or a serving limit)`);
}

function svdOptions(spec: Spec, name: string, rank: ReturnType<typeof denseRank>): FactorOptions {
  const randomized = spec.svd?.algorithm === 'randomized';
  if (randomized && rank.rank === undefined)
    throw bad('spec.svd.algorithm: randomized needs rankPolicy.fixed (the energy rule needs the exact SVD)');
  return {
    ...rank,
    randomized,
    ...(spec.svd?.oversampling === undefined ? {} : { oversample: spec.svd.oversampling }),
    ...(spec.svd?.powerIterations === undefined ? {} : { niter: spec.svd.powerIterations }),
    seed: spec.seed ?? 0,
    purpose: `rsvd:${name}`,
    split: spec.refactor === 'b-heavy' ? 'b_heavy' : 'balanced',
  };
}

const edge = (relation: string, m: { parent?: string; parentRef?: string }, parameters: Record<string, unknown>) => ({
  relation,
  ...(m.parent ? { parent: m.parent } : { parentRef: m.parentRef as string }),
  parameters,
});

/**
 * Calibration inputs per module. Collecting them from calibration text needs a forward pass
 * of the base, which this worker cannot run yet; precomputed inputs are accepted as a
 * .safetensors file (calibration.dataset.path) with one [n, in] tensor per module path.
 */
type Activations = (module: string) => Matrix;

function loadCalibration(spec: Spec, what: string): Activations | undefined {
  const path = spec.calibration?.dataset?.path;
  if (!spec.calibration) return undefined;
  if (!path?.endsWith('.safetensors'))
    throw bad(
      `spec.calibration.dataset: ${what} from calibration text needs a forward pass of the base to collect activations, which this worker cannot run yet; give precomputed inputs as a .safetensors file with one [n, in] tensor per module path`,
    );
  const file = readSafetensors(path);
  return (module: string) => {
    const t = file.tensors[module];
    if (t?.shape.length !== 2) throw new LowrankError('invalid_file', `${path}: no [n, in] calibration inputs for module ${module}`);
    return { rows: t.shape[0] as number, cols: t.shape[1] as number, data: Float32Array.from(tensorToFloat32(t)) };
  };
}

function columnNorms(x: Matrix): Float32Array {
  const n = new Float64Array(x.cols);
  for (let i = 0; i < x.rows; i++) for (let j = 0; j < x.cols; j++) n[j] = (n[j] as number) + (x.data[i * x.cols + j] as number) ** 2;
  return Float32Array.from(n, Math.sqrt);
}

async function runExtract(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const rank = denseRank(spec);
  const base = await fetchModel(spec.source.baseModel, 'spec.source.baseModel', ctx.client, ctx.workDir);
  const ft = await fetchModel(spec.extract?.fineTunedModel, 'spec.extract.fineTunedModel', ctx.client, ctx.workDir);
  const wb = readModelWeights(base.dir);
  const wf = readModelWeights(ft.dir);
  const keys = linearKeys(wf, spec.extract?.targetModules ?? LINEAR_NAMES);
  if (keys.length === 0)
    throw new LowrankError('invalid_file', `${ft.dir}: no linear layers named ${(spec.extract?.targetModules ?? LINEAR_NAMES).join(', ')}`);
  const modules: Record<string, LoraModule> = {};
  const report: Record<string, { rank: number; energyKept: number; relError: number }> = {};
  let unchanged = 0;
  for (const [i, key] of keys.entries()) {
    await ctx.reporter.progress({ stage: 'extracting', step: i, total: keys.length });
    const b = wb[key];
    const f = wf[key] as Weight;
    if (!b || b.shape.join() !== f.shape.join())
      throw new LowrankError(
        'invalid_file',
        `${key}: the base has ${b ? `[${b.shape.join(', ')}]` : 'no such weight'}, the fine-tune [${f.shape.join(', ')}]; is it a fine-tune of this base?`,
      );
    const d = f.data.map((v, j) => v - (b.data[j] as number));
    if (d.every((v) => v === 0)) {
      unchanged++;
      continue;
    }
    const r = factorDense({ rows: f.shape[0] as number, cols: f.shape[1] as number, data: d }, svdOptions(spec, modulePath(key), rank));
    modules[modulePath(key)] = r.module;
    report[modulePath(key)] = { rank: r.module.r, energyKept: round(r.retainedEnergy), relError: round(r.relError) };
  }
  if (Object.keys(modules).length === 0)
    throw new LowrankError('invalid_request', `the fine-tune equals the base in every targeted linear layer: nothing to extract`);
  const dir = join(ctx.workDir, 'output', 'adapter');
  writePeftAdapter(dir, modules, { base_model_name_or_path: base.label });
  const rows = Object.values(report);
  return {
    dir,
    baseModel: base.label,
    method: 'extract',
    methodMetadata: {
      kind: 'compression',
      mode: 'extract',
      ...summary(
        fullRank(wf, keys),
        Math.max(...rows.map((r) => r.rank)),
        rows.map((r) => r.relError),
        rows.map((r) => r.energyKept),
      ),
      base: base.parent ?? base.parentRef,
      fineTuned: ft.parent ?? ft.parentRef,
      ...rank,
      modules: report,
    },
    metrics: {
      modules: rows.length,
      unchangedModules: unchanged,
      energyKeptMin: Math.min(...rows.map((r) => r.energyKept)),
      relErrorMax: Math.max(...rows.map((r) => r.relError)),
    },
    lineage: [edge('extracted_from', ft, { mode: 'extract', base: base.parent ?? base.parentRef, ...rank })],
  };
}

/** min ‖(W − W2 W1) Xᵀ‖: the EoRA transform applied to W itself (Ŵ = 0, METHODS §3.3). */
function awareFactor(m: Matrix, x: Matrix, rank: number) {
  const r = eora(m, x, Math.min(rank, m.rows, m.cols));
  const relError = r.errorBefore > 0 ? r.errorAfter / r.errorBefore : 0;
  return { module: r.module, retainedEnergy: 1 - relError ** 2, relError };
}

async function runBaseSvd(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  if (spec.baseSvd?.allocation === 'welore') throw bad('spec.baseSvd.allocation: welore is not implemented yet; use rank-policy');
  const rank = denseRank(spec);
  const aware = spec.baseSvd?.activationAware ? loadCalibration(spec, 'the activation-aware SVD') : undefined;
  if (aware && rank.rank === undefined) throw bad('spec.rankPolicy: the activation-aware SVD needs a fixed rank');
  const base = await fetchModel(spec.source.baseModel, 'spec.source.baseModel', ctx.client, ctx.workDir);
  const w = readModelWeights(base.dir);
  const keys = linearKeys(w, LINEAR_NAMES, spec.baseSvd?.layers);
  if (keys.length === 0) throw new LowrankError('invalid_file', `${base.dir}: no linear layers to factor`);
  const factors: Record<string, WritableTensor> = {};
  const report: Record<string, { rank: number; energyKept: number; relError: number; pays: boolean }> = {};
  let before = 0;
  let after = 0;
  for (const [i, key] of keys.entries()) {
    await ctx.reporter.progress({ stage: 'factoring', step: i, total: keys.length });
    const m = asMatrix(w[key] as Weight);
    const r = aware ? awareFactor(m, aware(modulePath(key)), rank.rank as number) : factorDense(m, svdOptions(spec, modulePath(key), rank));
    const k = r.module.r;
    factors[`${key}.W2`] = { dtype: 'F32', shape: [m.rows, k], data: r.module.B };
    factors[`${key}.W1`] = { dtype: 'F32', shape: [k, m.cols], data: r.module.A };
    (w[key] as Weight).data = gemm({ rows: m.rows, cols: k, data: r.module.B }, { rows: k, cols: m.cols, data: r.module.A }).data;
    before += m.rows * m.cols;
    after += k * (m.rows + m.cols);
    report[modulePath(key)] = {
      rank: k,
      energyKept: round(r.retainedEnergy),
      relError: round(r.relError),
      pays: k * (m.rows + m.cols) < m.rows * m.cols,
    };
  }
  const dir = join(ctx.workDir, 'output', 'model');
  writeModelDir(base.dir, w, dir, { 'lowrank_factors.safetensors': factors });
  const rows = Object.values(report);
  return {
    dir,
    baseModel: base.label,
    method: 'base-svd',
    methodMetadata: {
      kind: 'compression',
      mode: 'base-svd',
      ...summary(
        fullRank(w, keys),
        Math.max(...rows.map((r) => r.rank)),
        rows.map((r) => r.relError),
        rows.map((r) => r.energyKept),
      ),
      activationAware: !!aware,
      format: 'lowrank-factored',
      factorsFile: 'lowrank_factors.safetensors',
      source: base.parent ?? base.parentRef,
      ...rank,
      modules: report,
    },
    metrics: {
      paramsBefore: before,
      paramsAfter: after,
      energyKeptMin: Math.min(...rows.map((r) => r.energyKept)),
      relErrorMax: Math.max(...rows.map((r) => r.relError)),
    },
    lineage: [edge('compressed_from', base, { mode: 'base-svd', ...rank })],
  };
}

async function runBaseCur(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const calib = loadCalibration(spec, 'activation-weighted CUR');
  if ((spec.cur?.healingSteps ?? 0) > 0) throw bad('spec.cur.healingSteps: healing needs the training engine; set 0');
  if (spec.cur?.rank === undefined && spec.cur?.ratio === undefined) throw bad('spec.cur: give rank or ratio');
  const base = await fetchModel(spec.source.baseModel, 'spec.source.baseModel', ctx.client, ctx.workDir);
  const w = readModelWeights(base.dir);
  const keys = linearKeys(w, LINEAR_NAMES, spec.cur?.layers);
  if (keys.length === 0) throw new LowrankError('invalid_file', `${base.dir}: no linear layers to compress`);
  const factors: Record<string, WritableTensor> = {};
  const indices: Record<string, string> = {};
  const report: Record<string, { rank: number; relError: number }> = {};
  let before = 0;
  let after = 0;
  for (const [i, key] of keys.entries()) {
    await ctx.reporter.progress({ stage: 'cur', step: i, total: keys.length });
    const m = asMatrix(w[key] as Weight);
    const k = Math.max(1, Math.min(spec.cur?.rank ?? Math.round((spec.cur?.ratio as number) * Math.min(m.rows, m.cols)), m.rows, m.cols));
    const r = curDecompose(m, k, calib ? columnNorms(calib(modulePath(key))) : undefined);
    factors[`${key}.C`] = { dtype: 'F32', shape: [m.rows, k], data: r.c.data };
    factors[`${key}.U`] = { dtype: 'F32', shape: [k, k], data: r.u.data };
    factors[`${key}.R`] = { dtype: 'F32', shape: [k, m.cols], data: r.r.data };
    indices[`${key}.rows`] = JSON.stringify(r.rows);
    indices[`${key}.cols`] = JSON.stringify(r.cols);
    (w[key] as Weight).data = gemm(gemm(r.c, r.u), r.r).data;
    before += m.rows * m.cols;
    after += k * (m.rows + m.cols + k);
    report[modulePath(key)] = { rank: k, relError: round(r.relError) };
  }
  const dir = join(ctx.workDir, 'output', 'model');
  writeModelDir(base.dir, w, dir, { 'lowrank_cur.safetensors': factors });
  writeFileSync(join(dir, 'lowrank_cur_indices.json'), `${JSON.stringify(indices)}\n`);
  return {
    dir,
    baseModel: base.label,
    method: 'base-cur',
    methodMetadata: {
      kind: 'compression',
      mode: 'base-cur',
      ...summary(
        fullRank(w, keys),
        Math.max(...Object.values(report).map((r) => r.rank)),
        Object.values(report).map((r) => r.relError),
      ),
      activationWeighted: !!calib,
      format: 'lowrank-cur',
      source: base.parent ?? base.parentRef,
      modules: report,
    },
    metrics: { paramsBefore: before, paramsAfter: after, relErrorMax: Math.max(...Object.values(report).map((r) => r.relError)) },
    lineage: [
      edge('compressed_from', base, { mode: 'base-cur', ...(spec.cur?.rank ? { rank: spec.cur.rank } : { ratio: spec.cur?.ratio }) }),
    ],
  };
}

async function runQuantize(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const q = spec.quantize;
  if (q && (q.bits !== 8 || q.scheme !== 'int'))
    throw bad(`spec.quantize: only bits 8, scheme int is implemented (got bits ${q.bits}, scheme ${q.scheme})`);
  if (!spec.source.adapter) throw bad('spec.source.adapter: quantize needs the adapter');
  const input = await fetchAdapter(spec.source.adapter, 'spec.source.adapter', ctx.client, ctx.workDir);
  if (input.adapter.config.use_dora)
    throw bad('spec.source.adapter: DoRA adapters are not quantized (the magnitude vector would need its own format)');
  const baseModel = String(input.adapter.config.base_model_name_or_path ?? 'unknown');
  const dir = join(ctx.workDir, 'output', 'adapter');
  const { report } = writeQuantizedAdapter(dir, input.adapter.modules, { base_model_name_or_path: baseModel });
  const params = Object.values(input.adapter.modules).reduce((n, m) => n + m.r * (m.in + m.out), 0);
  const rowsCount = Object.values(input.adapter.modules).reduce((n, m) => n + m.r + m.out, 0);
  return {
    dir,
    baseModel,
    method: 'quantize',
    methodMetadata: {
      kind: 'compression',
      mode: 'quantize',
      ...summary(
        Math.max(...Object.values(input.adapter.modules).map((m) => m.r)),
        Math.max(...Object.values(input.adapter.modules).map((m) => m.r)),
        Object.values(report).map((r) => r.relError),
      ),
      source: input.parent ?? input.parentRef,
      bits: 8,
      scheme: 'int',
      granularity: 'row',
      format: 'int8-rowwise',
      modules: report,
    },
    metrics: {
      bytesBefore: params * 4,
      bytesAfter: params + rowsCount * 4,
      relErrorMax: Math.max(...Object.values(report).map((r) => r.relError)),
    },
    lineage: [
      {
        relation: 'quantized_from',
        ...(input.parent ? { parent: input.parent } : { parentRef: input.parentRef as string }),
        parameters: { bits: 8, scheme: 'int', granularity: 'row' },
      },
    ],
  };
}

async function runEora(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const calib = loadCalibration(spec, 'EoRA');
  const e = spec.eora;
  if (!e) throw bad('spec.eora: give rank and a compressor or compressedModel');
  const base = await fetchModel(spec.source.baseModel, 'spec.source.baseModel', ctx.client, ctx.workDir);
  const w = readModelWeights(base.dir);
  let compressed: Record<string, Weight> | undefined;
  let compressedRef: { parent?: string; parentRef?: string } | undefined;
  let compressedLabel = base.label;
  if (e.compressedModel) {
    const c = await fetchModel(e.compressedModel, 'spec.eora.compressedModel', ctx.client, ctx.workDir);
    compressed = readModelWeights(c.dir);
    compressedRef = c;
    compressedLabel = c.label;
  } else if (e.compressor) {
    if (e.compressor.type !== 'rtn') throw bad(`spec.eora.compressor.type: ${e.compressor.type} is not implemented yet; rtn is`);
    compressedLabel = `${base.label} (rtn int${e.compressor.bits ?? 4} g${e.compressor.groupSize})`;
  } else throw bad('spec.eora: give compressor or compressedModel');
  const keys = linearKeys(w);
  const modules: Record<string, LoraModule> = {};
  const report: Record<string, { relErrorBefore: number; relErrorAfter: number }> = {};
  for (const [i, key] of keys.entries()) {
    await ctx.reporter.progress({ stage: 'compensating', step: i, total: keys.length });
    const m = asMatrix(w[key] as Weight);
    const hat = compressed
      ? compressed[key]
      : { shape: [m.rows, m.cols], data: rtnQuantize(m, e.compressor?.bits ?? 4, e.compressor?.groupSize ?? 64).data };
    if (!hat || hat.shape.join() !== [m.rows, m.cols].join())
      throw new LowrankError('invalid_file', `${key}: the compressed model has no weight of shape [${m.rows}, ${m.cols}]`);
    const delta = { rows: m.rows, cols: m.cols, data: m.data.map((v, j) => v - (hat.data[j] as number)) };
    const norm = Math.sqrt(delta.data.reduce((s, v) => s + v * v, 0));
    const wNorm = Math.sqrt(m.data.reduce((s, v) => s + v * v, 0));
    if (norm === 0) continue;
    const k = Math.min(e.rank, m.rows, m.cols);
    if (calib) {
      const r = eora(delta, calib(modulePath(key)), k, e.eigenFloor ?? 1e-10);
      modules[modulePath(key)] = r.module;
      report[modulePath(key)] = { relErrorBefore: 1, relErrorAfter: round(r.errorBefore > 0 ? r.errorAfter / r.errorBefore : 0) };
    } else {
      const r = factorDense(delta, { rank: k, seed: spec.seed ?? 0, purpose: `rsvd:${modulePath(key)}` });
      modules[modulePath(key)] = r.module;
      report[modulePath(key)] = { relErrorBefore: round(norm / wNorm), relErrorAfter: round((r.relError * norm) / wNorm) };
    }
  }
  if (Object.keys(modules).length === 0)
    throw new LowrankError('invalid_request', 'the compressed model equals the base: nothing to compensate');
  const dir = join(ctx.workDir, 'output', 'adapter');
  writePeftAdapter(dir, modules, { base_model_name_or_path: compressedLabel });
  const rows = Object.values(report);
  return {
    dir,
    baseModel: compressedLabel,
    method: 'eora',
    methodMetadata: {
      kind: 'compression',
      mode: 'eora',
      ...summary(
        0,
        e.rank,
        rows.map((r) => r.relErrorAfter),
        rows.map((r) => (r.relErrorBefore > 0 ? 1 - (r.relErrorAfter / r.relErrorBefore) ** 2 : 1)),
      ),
      activationAware: !!calib,
      // with calibration inputs: ‖(ΔW − BA)Xᵀ‖/‖ΔW Xᵀ‖; without: ‖ΔW − BA‖/‖W‖ (LoRC baseline)
      errorMeasure: calib ? 'calibration-output' : 'weight',
      source: base.parent ?? base.parentRef,
      ...(compressedRef ? { compressed: compressedRef.parent ?? compressedRef.parentRef } : { compressor: e.compressor }),
      rank: e.rank,
      modules: report,
    },
    metrics: {
      relErrorBeforeMax: Math.max(...rows.map((r) => r.relErrorBefore)),
      relErrorAfterMax: Math.max(...rows.map((r) => r.relErrorAfter)),
    },
    lineage: [
      edge('compressed_from', base, { mode: 'eora', rank: e.rank, ...(e.compressor ? { compressor: e.compressor } : {}) }),
      ...(compressedRef ? [edge('compressed_from', compressedRef, { role: 'compressed base' })] : []),
    ],
  };
}

export const BASE_MODES = ['extract', 'base-svd', 'base-cur', 'quantize', 'eora'] as const;

export function runCompressMode(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  switch (spec.mode) {
    case 'extract':
      return runExtract(spec, ctx);
    case 'base-svd':
      return runBaseSvd(spec, ctx);
    case 'base-cur':
      return runBaseCur(spec, ctx);
    case 'quantize':
      return runQuantize(spec, ctx);
    case 'eora':
      return runEora(spec, ctx);
    default:
      throw bad(`spec.mode: ${spec.mode} is not implemented by this worker yet; rank-reduction, ${BASE_MODES.join(', ')} are`);
  }
}
