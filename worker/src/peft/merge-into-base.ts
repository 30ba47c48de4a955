/**
 * Merging an adapter into base weights for deployment, and the reverse (METHODS §1.1):
 * W ← W + s·B·A per adapted module (float32 GEMM with float32 accumulation, as PEFT's
 * merge_and_unload), unmerge subtracts. The output is a Hugging Face model directory:
 * the base's config and tokenizer files copied, weights in one model.safetensors.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import { gemm, type LoraModule } from '../native/linalg.ts';
import { readSafetensors, tensorToFloat32, type WritableTensor, writeSafetensors } from '../native/safetensors.ts';

export type Direction = 'merge' | 'unmerge';

/** W ± s·B·A for each module, on float32 copies of the named base weights. */
export function applyDeltas(
  weights: Record<string, { shape: number[]; data: Float32Array }>,
  modules: Record<string, LoraModule>,
  direction: Direction = 'merge',
): string[] {
  const touched: string[] = [];
  for (const [path, m] of Object.entries(modules)) {
    const key = `${path}.weight`;
    const w = weights[key];
    if (!w)
      throw new LowrankError(
        'invalid_file',
        `the base model has no weight ${key} for adapter module ${path}; is the adapter for this base?`,
      );
    if (w.shape[0] !== m.out || w.shape[1] !== m.in) {
      throw new LowrankError('invalid_file', `${key} is [${w.shape.join(', ')}] but the adapter module is [${m.out}, ${m.in}]`);
    }
    const sign = direction === 'merge' ? 1 : -1;
    const merged = gemm(
      { rows: m.out, cols: m.r, data: m.B },
      { rows: m.r, cols: m.in, data: m.A },
      { alpha: sign * m.scale, beta: 1, c: { rows: m.out, cols: m.in, data: w.data } },
    );
    w.data = merged.data;
    touched.push(key);
  }
  return touched;
}

/** Writes base + adapter (or base − adapter) as a Hugging Face model directory. */
export function mergeIntoBase(
  baseDir: string,
  modules: Record<string, LoraModule>,
  outDir: string,
  direction: Direction = 'merge',
): { tensors: number; merged: string[] } {
  const shards = readdirSync(baseDir).filter((f) => f.endsWith('.safetensors'));
  if (shards.length === 0) throw new LowrankError('invalid_file', `${baseDir} has no *.safetensors weights`);
  const weights: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const shard of shards) {
    for (const [key, t] of Object.entries(readSafetensors(join(baseDir, shard)).tensors)) {
      if (key in weights) throw new LowrankError('invalid_file', `${baseDir}: tensor ${key} appears in more than one shard`);
      weights[key] = { shape: t.shape, data: Float32Array.from(tensorToFloat32(t)) };
    }
  }
  const merged = applyDeltas(weights, modules, direction);
  mkdirSync(outDir, { recursive: true });
  const out: Record<string, WritableTensor> = {};
  for (const [key, w] of Object.entries(weights)) out[key] = { dtype: 'F32', shape: w.shape, data: w.data };
  writeSafetensors(join(outDir, 'model.safetensors'), out, { format: 'pt' });
  for (const f of readdirSync(baseDir)) {
    if (f.endsWith('.safetensors') || f === 'model.safetensors.index.json') continue;
    if (existsSync(join(baseDir, f)) && !f.startsWith('.')) copyFileSync(join(baseDir, f), join(outDir, f));
  }
  return { tensors: Object.keys(out).length, merged };
}
