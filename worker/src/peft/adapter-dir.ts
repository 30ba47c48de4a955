/**
 * PEFT adapter directories (adapter_config.json + adapter_model.safetensors, METHODS §0.3),
 * read into per-module factors and written back so that PEFT, vLLM and the Hub load them
 * unchanged. Written adapters have every scaling folded into the factors' config: each
 * module's alpha is chosen so alpha/r is its scale, with rank_pattern/alpha_pattern keyed
 * by the full module path wherever a module differs from the global r / lora_alpha.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { LoraModule } from '../native/linalg.ts';
import { readSafetensors, tensorToFloat32, type WritableTensor, writeSafetensors } from '../native/safetensors.ts';

export interface PeftConfig {
  peft_type: string;
  r: number;
  lora_alpha: number;
  use_rslora?: boolean;
  use_dora?: boolean;
  lora_bias?: boolean;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  target_modules?: string[] | string;
  base_model_name_or_path?: string | null;
  [k: string]: unknown;
}

export interface PeftAdapter {
  config: PeftConfig;
  /** By module path as PEFT names it in the base model, e.g. model.layers.0.self_attn.q_proj. */
  modules: Record<string, LoraModule>;
}

const PREFIX = 'base_model.model.';

/** PEFT's pattern rule: key k (a regex) matches module m if re.match((.*\.)?(k)$, m); first match in order. */
export function patternValue(pattern: Record<string, number> | undefined, module: string): number | undefined {
  for (const [k, v] of Object.entries(pattern ?? {})) if (new RegExp(`^(.*\\.)?(${k})$`).test(module)) return v;
  return undefined;
}

export function readPeftAdapter(dir: string): PeftAdapter {
  let config: PeftConfig;
  try {
    config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as PeftConfig;
  } catch (err) {
    throw new LowrankError('invalid_file', `${dir}/adapter_config.json: ${(err as Error).message}`);
  }
  if (config.peft_type !== 'LORA') throw new LowrankError('invalid_file', `${dir}: peft_type ${config.peft_type} is not LORA`);
  const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
  const parts = new Map<string, { A?: Float32Array; B?: Float32Array; r?: number; in?: number; out?: number }>();
  for (const [key, t] of Object.entries(file.tensors)) {
    const m = /^base_model\.model\.(.+)\.(lora_A|lora_B)\.weight$/.exec(key);
    if (!m) {
      if (/lora_magnitude_vector|lora_B\.bias/.test(key)) continue; // flagged through the config below
      throw new LowrankError('invalid_file', `${dir}: tensor "${key}" is not a LoRA factor this reader knows`);
    }
    const [, path, which] = m as unknown as [string, string, 'lora_A' | 'lora_B'];
    const entry = parts.get(path) ?? {};
    const [rows, cols] = t.shape as [number, number];
    if (which === 'lora_A') Object.assign(entry, { A: tensorToFloat32(t), r: rows, in: cols });
    else Object.assign(entry, { B: tensorToFloat32(t), out: rows });
    parts.set(path, entry);
  }
  const modules: Record<string, LoraModule> = {};
  for (const [path, p] of parts) {
    if (!p.A || !p.B || p.r === undefined || p.in === undefined || p.out === undefined) {
      throw new LowrankError('invalid_file', `${dir}: module ${path} lacks its lora_A or lora_B`);
    }
    const r = patternValue(config.rank_pattern, path) ?? config.r;
    if (r !== p.r) throw new LowrankError('invalid_file', `${dir}: module ${path} has rank ${p.r} in the weights but ${r} in the config`);
    const alpha = patternValue(config.alpha_pattern, path) ?? config.lora_alpha;
    modules[path] = { r: p.r, in: p.in, out: p.out, A: p.A, B: p.B, scale: config.use_rslora ? alpha / Math.sqrt(p.r) : alpha / p.r };
  }
  return { config, modules };
}

export function writePeftAdapter(dir: string, modules: Record<string, LoraModule>, base: Partial<PeftConfig> = {}): PeftConfig {
  const names = Object.keys(modules).sort();
  if (names.length === 0) throw new LowrankError('invalid_request', 'an adapter needs at least one module');
  const r = Math.max(...names.map((n) => (modules[n] as LoraModule).r));
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const n of names) {
    const m = modules[n] as LoraModule;
    if (m.r !== r) rankPattern[n] = m.r;
    if (m.scale !== 1 || m.r !== r) alphaPattern[n] = m.scale * m.r; // alpha / r = scale
  }
  const tensors: Record<string, WritableTensor> = {};
  for (const n of names) {
    const m = modules[n] as LoraModule;
    tensors[`${PREFIX}${n}.lora_A.weight`] = { dtype: 'F32', shape: [m.r, m.in], data: m.A };
    tensors[`${PREFIX}${n}.lora_B.weight`] = { dtype: 'F32', shape: [m.out, m.r], data: m.B };
  }
  const config: PeftConfig = {
    peft_type: 'LORA',
    task_type: base.task_type ?? 'CAUSAL_LM',
    base_model_name_or_path: base.base_model_name_or_path ?? null,
    revision: base.revision ?? null,
    r,
    lora_alpha: r,
    target_modules: names,
    lora_dropout: 0,
    bias: 'none',
    use_rslora: false,
    use_dora: false,
    lora_bias: false,
    fan_in_fan_out: false,
    init_lora_weights: true,
    rank_pattern: rankPattern,
    alpha_pattern: alphaPattern,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    inference_mode: true,
  };
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'adapter_config.json'), `${JSON.stringify(config, null, 2)}\n`);
  return config;
}
