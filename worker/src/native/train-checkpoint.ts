/**
 * Training checkpoints: the adapter, DoRA magnitudes, LoRA-SB cores, AdamW moments and step of a
 * TrainModel (its state()), plus the caller's own JSON (data position, seeds), so that a
 * resumed run continues the same loss curve bit for bit. Two files in `dir`:
 * checkpoint.safetensors (tensors, written atomically) and checkpoint.json (written last,
 * atomically: a checkpoint without it is incomplete and refused).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { LoraModule } from './linalg.ts';
import { readSafetensors, tensorToFloat32, type WritableTensor, writeSafetensors } from './safetensors.ts';
import type { Moments, TrainState } from './train.ts';

const FORMAT = 'lowrank-train-checkpoint';
const MOMENT_KEYS = ['expAvgA', 'expAvgSqA', 'expAvgB', 'expAvgSqB', 'expAvgM', 'expAvgSqM', 'expAvgR', 'expAvgSqR'] as const;

interface ModuleEntry {
  r: number;
  in: number;
  out: number;
  scale: number;
  dora: boolean;
  /** LoRA-SB: a trainable core R [r, r]; A and B are frozen and have no moments. */
  core?: boolean;
}

interface Manifest {
  format: typeof FORMAT;
  version: 1;
  step: number;
  modules: Record<string, ModuleEntry>;
  meta: Record<string, unknown>;
}

export function saveCheckpoint(dir: string, state: TrainState, meta: Record<string, unknown> = {}): void {
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, WritableTensor> = {};
  const modules: Record<string, ModuleEntry> = {};
  const f32 = (data: Float32Array): WritableTensor => ({ dtype: 'F32', shape: [data.length], data });
  for (const [path, m] of Object.entries(state.modules)) {
    const mag = state.magnitudes[path];
    const core = state.cores?.[path];
    modules[path] = { r: m.r, in: m.in, out: m.out, scale: m.scale, dora: mag !== undefined, ...(core ? { core: true } : {}) };
    tensors[`${path}.A`] = f32(m.A);
    tensors[`${path}.B`] = f32(m.B);
    if (mag) tensors[`${path}.M`] = f32(mag);
    if (core) tensors[`${path}.R`] = f32(core);
    const mo = state.moments[path];
    for (const k of MOMENT_KEYS) {
      const v = mo?.[k];
      if (v) tensors[`${path}.${k}`] = f32(v);
    }
  }
  writeSafetensors(join(dir, 'checkpoint.safetensors'), tensors, { format: FORMAT });
  const manifest: Manifest = { format: FORMAT, version: 1, step: state.step, modules, meta };
  const tmp = join(dir, `.checkpoint.json.${process.pid}.tmp`);
  writeFileSync(tmp, `${JSON.stringify(manifest, null, 1)}\n`);
  renameSync(tmp, join(dir, 'checkpoint.json'));
}

function bad(dir: string, what: string): never {
  throw new LowrankError('invalid_file', `${dir}: ${what}`);
}

export function loadCheckpoint(dir: string): { state: TrainState; meta: Record<string, unknown> } {
  const manifestPath = join(dir, 'checkpoint.json');
  if (!existsSync(manifestPath)) throw new LowrankError('not_found', `${dir}: checkpoint.json is missing (no complete checkpoint here)`);
  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
  } catch (err) {
    bad(dir, `checkpoint.json is not JSON: ${(err as Error).message}`);
  }
  if (manifest?.format !== FORMAT || manifest.version !== 1) bad(dir, `checkpoint.json is not a ${FORMAT} version 1`);
  if (!Number.isSafeInteger(manifest.step) || manifest.step < 0) bad(dir, 'checkpoint.json: step must be a non-negative integer');
  const file = readSafetensors(join(dir, 'checkpoint.safetensors'));
  const get = (key: string, n: number): Float32Array => {
    const t = file.tensors[key];
    if (!t) bad(dir, `tensor "${key}" is missing from checkpoint.safetensors`);
    const v = tensorToFloat32(t);
    if (v.length !== n) bad(dir, `tensor "${key}" has ${v.length} entries, expected ${n}`);
    return v;
  };
  const state: TrainState = { step: manifest.step, modules: {}, magnitudes: {}, moments: {} };
  for (const [path, e] of Object.entries(manifest.modules ?? {})) {
    for (const k of ['r', 'in', 'out'] as const) {
      if (!Number.isSafeInteger(e[k]) || e[k] < 1) bad(dir, `checkpoint.json: modules["${path}"].${k} must be a positive integer`);
    }
    const m: LoraModule = {
      r: e.r,
      in: e.in,
      out: e.out,
      scale: e.scale,
      A: get(`${path}.A`, e.r * e.in),
      B: get(`${path}.B`, e.out * e.r),
    };
    state.modules[path] = m;
    if (e.dora) state.magnitudes[path] = get(`${path}.M`, e.out);
    if (e.core) {
      const rr = e.r * e.r;
      state.cores = { ...state.cores, [path]: get(`${path}.R`, rr) };
      const none = new Float32Array(0);
      state.moments[path] = {
        expAvgA: none,
        expAvgSqA: none,
        expAvgB: none,
        expAvgSqB: none,
        expAvgR: get(`${path}.expAvgR`, rr),
        expAvgSqR: get(`${path}.expAvgSqR`, rr),
      };
      continue;
    }
    const mo: Moments = {
      expAvgA: get(`${path}.expAvgA`, e.r * e.in),
      expAvgSqA: get(`${path}.expAvgSqA`, e.r * e.in),
      expAvgB: get(`${path}.expAvgB`, e.out * e.r),
      expAvgSqB: get(`${path}.expAvgSqB`, e.out * e.r),
      ...(e.dora ? { expAvgM: get(`${path}.expAvgM`, e.out), expAvgSqM: get(`${path}.expAvgSqM`, e.out) } : {}),
    };
    state.moments[path] = mo;
  }
  return { state, meta: manifest.meta ?? {} };
}
