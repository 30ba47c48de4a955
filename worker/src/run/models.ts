/**
 * Hugging Face model directories as job inputs and outputs (CompressionJob base modes):
 * a model named by local path or by registry version (pulled into the work dir), its
 * 2-D linear weights as float32, and a new directory with some weights replaced and the
 * config/tokenizer files copied. Hub downloads are not done by this worker.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { RegistryClient } from '@lowrank/registry-api/cli/client';
import { pull } from '@lowrank/registry-api/cli/transfer';
import { readSafetensors, tensorToFloat32, type WritableTensor, writeSafetensors } from '../native/safetensors.ts';

export interface ModelRef {
  name?: string;
  repository?: string;
  version?: number;
  tag?: string;
  path?: string;
}

export interface FetchedModel {
  dir: string;
  /** namespace/name@number for registry models (a lineage parent). */
  parent?: string;
  /** hf:<name> or file:<dir> otherwise. */
  parentRef?: string;
  /** What to call it (base_model_name_or_path). */
  label: string;
}

export async function fetchModel(
  ref: ModelRef | undefined,
  where: string,
  client: RegistryClient | undefined,
  workDir: string,
): Promise<FetchedModel> {
  if (!ref) throw new LowrankError('invalid_spec', `${where}: give the model as path (a local Hugging Face directory) or repository`);
  if (ref.repository) {
    if (!client)
      throw new LowrankError('invalid_request', `${where} names registry repository ${ref.repository}, but no registry is configured`);
    const wanted = ref.version !== undefined ? String(ref.version) : (ref.tag ?? 'latest');
    const v = await client.json<{ number: number }>('GET', `/v1/repos/${ref.repository}/versions/${encodeURIComponent(wanted)}`);
    const dir = ref.path ? resolve(ref.path) : join(workDir, 'models', ref.repository, String(v.number));
    await pull(client, ref.repository, String(v.number), dir);
    return { dir, parent: `${ref.repository}@${v.number}`, label: ref.name ?? `${ref.repository}@${v.number}` };
  }
  if (!ref.path)
    throw new LowrankError(
      'invalid_spec',
      `${where}: give path (a local Hugging Face directory) or repository; downloads of ${ref.name ?? 'a Hub model'} from the Hub are not done by this worker`,
    );
  const dir = resolve(ref.path);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new LowrankError('invalid_file', `${where}.path: ${dir} is not a directory (a Hugging Face model directory is expected)`);
  return { dir, parentRef: ref.name ? `hf:${ref.name}` : `file:${dir}`, label: ref.name ?? dir };
}

export interface Weight {
  shape: number[];
  data: Float32Array;
}

/** Every tensor of the model's *.safetensors shards as float32. */
export function readModelWeights(dir: string): Record<string, Weight> {
  const shards = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  if (shards.length === 0) throw new LowrankError('invalid_file', `${dir} has no *.safetensors weights`);
  const out: Record<string, Weight> = {};
  for (const shard of shards.sort())
    for (const [key, t] of Object.entries(readSafetensors(join(dir, shard)).tensors)) {
      if (key in out) throw new LowrankError('invalid_file', `${dir}: tensor ${key} appears in more than one shard`);
      out[key] = { shape: t.shape, data: Float32Array.from(tensorToFloat32(t)) };
    }
  return out;
}

export const LINEAR_NAMES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

/** The 2-D `<path>.weight` keys of linear layers named in `targets`, optionally only in decoder `layers`. */
export function linearKeys(weights: Record<string, Weight>, targets: readonly string[] = LINEAR_NAMES, layers?: number[]): string[] {
  return Object.keys(weights)
    .filter((k) => {
      const m = /(?:^|\.)layers\.(\d+)\..*?([a-z_]+)\.weight$/.exec(k);
      if (!m || weights[k]?.shape.length !== 2) return false;
      return targets.includes(m[2] as string) && (!layers || layers.includes(Number(m[1])));
    })
    .sort();
}

/** A model directory: `weights` in one model.safetensors, the source's other files copied. */
export function writeModelDir(
  sourceDir: string,
  weights: Record<string, Weight>,
  outDir: string,
  extra: Record<string, Record<string, WritableTensor>> = {},
): void {
  mkdirSync(outDir, { recursive: true });
  const tensors: Record<string, WritableTensor> = {};
  for (const [k, w] of Object.entries(weights)) tensors[k] = { dtype: 'F32', shape: w.shape, data: w.data };
  writeSafetensors(join(outDir, 'model.safetensors'), tensors, { format: 'pt' });
  for (const [file, t] of Object.entries(extra)) writeSafetensors(join(outDir, file), t, { format: 'pt' });
  for (const f of readdirSync(sourceDir)) {
    if (f.endsWith('.safetensors') || f === 'model.safetensors.index.json' || f.startsWith('.')) continue;
    if (statSync(join(sourceDir, f)).isFile()) copyFileSync(join(sourceDir, f), join(outDir, f));
  }
}
