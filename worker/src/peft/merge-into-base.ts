/**
 * Merging an adapter into base weights for deployment, and the reverse (METHODS §1.1):
 * W ← W + s·B·A per adapted module (float32 GEMM with float32 accumulation, as PEFT's
 * merge_and_unload), unmerge subtracts. The output is a Hugging Face model directory:
 * the base's config and tokenizer files copied, weights in f32 or bf16 (accumulated in
 * f32 either way), in one model.safetensors or, past the shard size, in
 * model-0000i-of-0000N.safetensors shards with model.safetensors.index.json, as
 * save_pretrained writes them.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
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

export interface ExportOptions {
  direction?: Direction;
  /** Dtype of the written weights (default f32). */
  dtype?: 'f32' | 'bf16';
  /** Largest shard in bytes (default 2 GiB); a tensor larger than that gets a shard of its own. */
  maxShardBytes?: number;
}

/** Writes base + adapter (or base − adapter) as a Hugging Face model directory. */
export function mergeIntoBase(
  baseDir: string,
  modules: Record<string, LoraModule>,
  outDir: string,
  options: ExportOptions | Direction = {},
): { tensors: number; merged: string[]; shards: string[] } {
  const o: ExportOptions = typeof options === 'string' ? { direction: options } : options;
  const shards = readdirSync(baseDir).filter((f) => f.endsWith('.safetensors'));
  if (shards.length === 0) throw new LowrankError('invalid_file', `${baseDir} has no *.safetensors weights`);
  const weights: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const shard of shards) {
    for (const [key, t] of Object.entries(readSafetensors(join(baseDir, shard)).tensors)) {
      if (key in weights) throw new LowrankError('invalid_file', `${baseDir}: tensor ${key} appears in more than one shard`);
      weights[key] = { shape: t.shape, data: Float32Array.from(tensorToFloat32(t)) };
    }
  }
  const merged = applyDeltas(weights, modules, o.direction ?? 'merge');
  mkdirSync(outDir, { recursive: true });
  const dtype = o.dtype === 'bf16' ? 'BF16' : 'F32';
  const bytesPer = dtype === 'BF16' ? 2 : 4;
  const maxShard = o.maxShardBytes ?? 2 * 2 ** 30;
  // Shards in name order, each filled up to the limit, as save_pretrained does.
  const groups: string[][] = [[]];
  let filled = 0;
  for (const key of Object.keys(weights).sort()) {
    const size = (weights[key] as { data: Float32Array }).data.length * bytesPer;
    if (filled > 0 && filled + size > maxShard) {
      groups.push([]);
      filled = 0;
    }
    (groups.at(-1) as string[]).push(key);
    filled += size;
  }
  const names =
    groups.length === 1
      ? ['model.safetensors']
      : groups.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(groups.length).padStart(5, '0')}.safetensors`);
  const weightMap: Record<string, string> = {};
  let total = 0;
  groups.forEach((keys, i) => {
    const out: Record<string, WritableTensor> = {};
    for (const key of keys) {
      const w = weights[key] as { shape: number[]; data: Float32Array };
      out[key] = dtype === 'BF16' ? { dtype: 'BF16', shape: w.shape, data: w.data } : { dtype: 'F32', shape: w.shape, data: w.data };
      weightMap[key] = names[i] as string;
      total += w.data.length * bytesPer;
    }
    writeSafetensors(join(outDir, names[i] as string), out, { format: 'pt' });
  });
  if (names.length > 1)
    writeFileSync(
      join(outDir, 'model.safetensors.index.json'),
      `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`,
    );
  for (const f of readdirSync(baseDir)) {
    if (f.endsWith('.safetensors') || f === 'model.safetensors.index.json') continue;
    if (existsSync(join(baseDir, f)) && !f.startsWith('.')) copyFileSync(join(baseDir, f), join(outDir, f));
  }
  return { tensors: Object.keys(weights).length, merged, shards: names };
}
