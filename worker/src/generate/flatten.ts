/**
 * ICM-LoRA's flattening (METHODS §4.2): the tensors of adapter_model.safetensors in sorted
 * key order, each z-normalised by per-key statistics pooled over the family's training
 * members (stored in the generator so samples de-normalise the same way), concatenated
 * (length D) and zero-padded to D', a multiple of 4096.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import { readSafetensors, tensorToFloat32, writeSafetensors } from '../native/safetensors.ts';

export const CHUNK = 4096;

export interface LayoutEntry {
  key: string;
  shape: number[];
  offset: number;
  size: number;
}

export interface Layout {
  entries: LayoutEntry[];
  /** D: the parameters of one adapter. */
  length: number;
  /** D': length padded to a multiple of CHUNK. */
  padded: number;
}

/** Per key: the pooled mean and standard deviation (1 where a key is constant). */
export type Stats = Record<string, { mean: number; std: number }>;

export interface AdapterTensors {
  tensors: Record<string, { shape: number[]; data: Float32Array }>;
  config: Record<string, unknown>;
}

export function readAdapterTensors(dir: string, where: string): AdapterTensors {
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new LowrankError('invalid_file', `${where}: ${dir}/adapter_config.json: ${(err as Error).message}`);
  }
  const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
  const tensors: AdapterTensors['tensors'] = {};
  for (const [key, t] of Object.entries(file.tensors)) tensors[key] = { shape: t.shape, data: tensorToFloat32(t) };
  return { tensors, config };
}

export function layoutOf(first: AdapterTensors): Layout {
  let offset = 0;
  const entries = Object.keys(first.tensors)
    .sort()
    .map((key) => {
      const t = first.tensors[key] as AdapterTensors['tensors'][string];
      const e = { key, shape: t.shape, offset, size: t.data.length };
      offset += t.data.length;
      return e;
    });
  if (offset === 0) throw new LowrankError('invalid_file', 'the adapter has no parameters');
  return { entries, length: offset, padded: Math.ceil(offset / CHUNK) * CHUNK };
}

/** Throws, naming the member and the key, unless a has exactly the layout's keys and shapes. */
export function checkLayout(layout: Layout, a: AdapterTensors, where: string): void {
  const keys = Object.keys(a.tensors).sort();
  const want = layout.entries.map((e) => e.key);
  const missing = want.filter((k) => !a.tensors[k]);
  const extra = keys.filter((k) => !want.includes(k));
  if (missing.length || extra.length)
    throw new LowrankError(
      'invalid_spec',
      `${where}: not the family's layout (same base, targets and rank are needed): ${missing.length ? `lacks ${missing.slice(0, 3).join(', ')}` : ''}${missing.length && extra.length ? '; ' : ''}${extra.length ? `has extra ${extra.slice(0, 3).join(', ')}` : ''}`,
    );
  for (const e of layout.entries) {
    const shape = (a.tensors[e.key] as { shape: number[] }).shape;
    if (shape.join('x') !== e.shape.join('x'))
      throw new LowrankError('invalid_spec', `${where}: ${e.key} has shape [${shape}], the family's is [${e.shape}] (same rank is needed)`);
  }
}

export function pooledStats(layout: Layout, members: AdapterTensors[]): Stats {
  const stats: Stats = {};
  for (const e of layout.entries) {
    let s = 0;
    let s2 = 0;
    for (const m of members)
      for (const v of (m.tensors[e.key] as { data: Float32Array }).data) {
        s += v;
        s2 += v * v;
      }
    const n = e.size * members.length;
    const mean = s / n;
    const std = Math.sqrt(Math.max(0, s2 / n - mean * mean));
    stats[e.key] = { mean, std: std > 1e-12 ? std : 1 };
  }
  return stats;
}

/** Digest of the statistics (recorded as the normalisation-stats hash). */
export function statsDigest(stats: Stats): string {
  return `sha256:${createHash('sha256').update(JSON.stringify(stats)).digest('hex')}`;
}

export function flatten(layout: Layout, stats: Stats, a: AdapterTensors): Float32Array {
  const out = new Float32Array(layout.padded);
  for (const e of layout.entries) {
    const { mean, std } = stats[e.key] as { mean: number; std: number };
    const data = (a.tensors[e.key] as { data: Float32Array }).data;
    for (let i = 0; i < e.size; i++) out[e.offset + i] = ((data[i] as number) - mean) / std;
  }
  return out;
}

/** The raw (de-normalised, unpadded) parameters of a flattened vector. */
export function denormalise(layout: Layout, stats: Stats, x: Float32Array): Float32Array {
  const out = new Float32Array(layout.length);
  for (const e of layout.entries) {
    const { mean, std } = stats[e.key] as { mean: number; std: number };
    for (let i = 0; i < e.size; i++) out[e.offset + i] = (x[e.offset + i] as number) * std + mean;
  }
  return out;
}

/** Writes raw parameters as adapter_model.safetensors + the family's adapter_config.json. */
export function writeAdapter(dir: string, layout: Layout, raw: Float32Array, config: Record<string, unknown>): void {
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const e of layout.entries) tensors[e.key] = { dtype: 'F32', shape: e.shape, data: raw.slice(e.offset, e.offset + e.size) };
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'adapter_config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/** Cosine similarity and ‖a − b‖ / ‖b‖. */
export function distance(a: Float32Array, b: Float32Array): { cosine: number; relativeL2: number } {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  let dd = 0;
  for (let i = 0; i < b.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    ab += x * y;
    aa += x * x;
    bb += y * y;
    dd += (x - y) * (x - y);
  }
  return { cosine: ab / (Math.sqrt(aa * bb) || 1), relativeL2: Math.sqrt(dd) / (Math.sqrt(bb) || 1) };
}
