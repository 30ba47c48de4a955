/**
 * int8 adapters (CompressionJob mode quantize): each factor stored as I8 with one F32 scale
 * per row under `<factor>.weight_scale` ([rows, 1], the compressed-tensors convention), so
 * any consumer dequantizes with `q.float() * scale`. The scale s = α/r is folded into B
 * first and the config written with lora_alpha = r, as every derived adapter (METHODS §0.2).
 * The safetensors metadata says `lowrank.quantization: int8-rowwise`; PEFT needs the
 * dequantized copy (readQuantizedAdapter, or the two lines above in Python).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import { dequantizeInt8Rows, quantizeInt8Rows } from '../native/compress-base.ts';
import type { LoraModule } from '../native/linalg.ts';
import { readSafetensors, type WritableTensor, writeSafetensors } from '../native/safetensors.ts';
import { type PeftAdapter, type PeftConfig, readPeftAdapter, writePeftAdapter } from './adapter-dir.ts';

export const QUANTIZATION_TAG = 'int8-rowwise';
const PREFIX = 'base_model.model.';

export interface QuantizeReport {
  /** ‖x − deq(q(x))‖_F / ‖x‖_F per factor, the largest over a module's A and B. */
  relError: number;
}

export function writeQuantizedAdapter(
  dir: string,
  modules: Record<string, LoraModule>,
  base: Partial<PeftConfig> = {},
): { config: PeftConfig; report: Record<string, QuantizeReport> } {
  const folded: Record<string, LoraModule> = {};
  for (const [n, m] of Object.entries(modules)) folded[n] = { ...m, B: m.B.map((v) => v * m.scale), scale: 1 };
  const config = writePeftAdapter(dir, folded, base);
  const tensors: Record<string, WritableTensor> = {};
  const report: Record<string, QuantizeReport> = {};
  for (const [n, m] of Object.entries(folded)) {
    let worst = 0;
    for (const [which, rows, cols, data] of [
      ['lora_A', m.r, m.in, m.A],
      ['lora_B', m.out, m.r, m.B],
    ] as const) {
      const q = quantizeInt8Rows({ rows, cols, data });
      const back = dequantizeInt8Rows(q).data;
      let num = 0;
      let den = 0;
      for (let i = 0; i < data.length; i++) {
        num += ((data[i] as number) - (back[i] as number)) ** 2;
        den += (data[i] as number) ** 2;
      }
      worst = Math.max(worst, den > 0 ? Math.sqrt(num / den) : 0);
      tensors[`${PREFIX}${n}.${which}.weight`] = { dtype: 'I8', shape: [rows, cols], data: q.q };
      tensors[`${PREFIX}${n}.${which}.weight_scale`] = { dtype: 'F32', shape: [rows, 1], data: q.scale };
    }
    report[n] = { relError: worst };
  }
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt', 'lowrank.quantization': QUANTIZATION_TAG });
  return { config, report };
}

/** The dequantized adapter (scale 1 per module), or the plain one when the file is not quantized. */
export function readQuantizedAdapter(dir: string): PeftAdapter {
  const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
  if (file.metadata?.['lowrank.quantization'] !== QUANTIZATION_TAG) return readPeftAdapter(dir);
  const plain = file.tensors;
  const modules: Record<string, LoraModule> = {};
  const parts = new Map<string, { A?: Float32Array; B?: Float32Array; r?: number; in?: number; out?: number }>();
  for (const [key, t] of Object.entries(plain)) {
    const m = /^base_model\.model\.(.+)\.(lora_A|lora_B)\.weight$/.exec(key);
    if (!m) continue;
    const scale = plain[`${key}_scale`];
    if (t.dtype !== 'I8' || !scale || scale.dtype !== 'F32')
      throw new LowrankError('invalid_file', `${dir}: ${key} must be I8 with an F32 ${key}_scale in an int8 adapter`);
    const [rows, cols] = t.shape as [number, number];
    const deq = dequantizeInt8Rows({ rows, cols, q: t.data as Int8Array, scale: scale.data as Float32Array }).data;
    const [, path, which] = m as unknown as [string, string, 'lora_A' | 'lora_B'];
    const e = parts.get(path) ?? {};
    if (which === 'lora_A') Object.assign(e, { A: deq, r: rows, in: cols });
    else Object.assign(e, { B: deq, out: rows });
    parts.set(path, e);
  }
  for (const [path, p] of parts) {
    if (!p.A || !p.B || p.r === undefined || p.in === undefined || p.out === undefined)
      throw new LowrankError('invalid_file', `${dir}: module ${path} lacks its lora_A or lora_B`);
    modules[path] = { r: p.r, in: p.in, out: p.out, A: p.A, B: p.B, scale: 1 };
  }
  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as PeftConfig;
  return { config, modules };
}
