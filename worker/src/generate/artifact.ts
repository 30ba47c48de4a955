/**
 * The generator artifact (a registry version of its own): generator.safetensors holds the
 * CVAE parameters (enc.w1 … dec.b4, PyTorch Linear layout) and `family.x`, the normalised
 * flattened training members (the memorisation check's reference); generator.json holds
 * everything needed to sample an adapter: dims, flattening layout, pooled per-key stats,
 * the embedder, the family's adapter_config.json and what the generator learned from.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import { CVAE_PARAM_NAMES, type CvaeDims, type CvaeParams, cvaeParamSizes } from '../native/cvae.ts';
import { readSafetensors, tensorToFloat32, writeSafetensors } from '../native/safetensors.ts';
import type { Layout, Stats } from './flatten.ts';

export const GENERATOR_FORMAT = 'lowrank/icm-lora-generator/v1';

export interface FamilyMemberRecord {
  /** namespace/name@N (registry) or file:<dir>. */
  ref: string;
  taskDescription: string;
  heldOut: boolean;
  embeddingDigest: string;
}

export interface GeneratorConfig {
  format: typeof GENERATOR_FORMAT;
  model: 'cvae-mlp';
  dims: CvaeDims;
  beta: number;
  layout: Layout;
  stats: Stats;
  statsDigest: string;
  embedder: { id: string; dim: number; source: string };
  baseModel: string;
  adapterConfig: Record<string, unknown>;
  family: FamilyMemberRecord[];
  /** Indices into family of the rows of family.x (the training members). */
  trainRows: number[];
  training: Record<string, unknown>;
}

export interface Generator {
  config: GeneratorConfig;
  params: CvaeParams;
  /** trainRows.length x D' normalised training vectors. */
  familyX: Float32Array;
}

export function writeGenerator(dir: string, g: Generator): void {
  mkdirSync(dir, { recursive: true });
  const { dims } = g.config;
  const shapes = [
    [dims.hidden, dims.input],
    [dims.hidden],
    [2 * dims.latent, dims.hidden + dims.cond],
    [2 * dims.latent],
    [dims.hidden, dims.latent + dims.cond],
    [dims.hidden],
    [dims.input, dims.hidden],
    [dims.input],
  ];
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  CVAE_PARAM_NAMES.forEach((name, i) => {
    tensors[name] = { dtype: 'F32', shape: shapes[i] as number[], data: g.params[i] as Float32Array };
  });
  tensors['family.x'] = { dtype: 'F32', shape: [g.config.trainRows.length, dims.input], data: g.familyX };
  writeSafetensors(join(dir, 'generator.safetensors'), tensors, { format: GENERATOR_FORMAT });
  writeFileSync(join(dir, 'generator.json'), `${JSON.stringify(g.config, null, 1)}\n`);
}

export function readGenerator(dir: string, where: string): Generator {
  const cfgPath = join(dir, 'generator.json');
  const wPath = join(dir, 'generator.safetensors');
  if (!existsSync(cfgPath) || !existsSync(wPath))
    throw new LowrankError(
      'invalid_spec',
      `${where}: ${dir} is not a generator (generator.json and generator.safetensors, as mode train-generator writes them, are expected)`,
    );
  let config: GeneratorConfig;
  try {
    config = JSON.parse(readFileSync(cfgPath, 'utf8')) as GeneratorConfig;
  } catch (err) {
    throw new LowrankError('invalid_file', `${where}: ${cfgPath}: ${(err as Error).message}`);
  }
  if (config.format !== GENERATOR_FORMAT)
    throw new LowrankError('invalid_file', `${where}: generator format ${JSON.stringify(config.format)} is not ${GENERATOR_FORMAT}`);
  const file = readSafetensors(wPath);
  const sizes = cvaeParamSizes(config.dims);
  const params = CVAE_PARAM_NAMES.map((name, i) => {
    const t = file.tensors[name];
    if (!t) throw new LowrankError('invalid_file', `${where}: generator.safetensors lacks ${name}`);
    const data = tensorToFloat32(t);
    if (data.length !== sizes[i])
      throw new LowrankError('invalid_file', `${where}: ${name} has ${data.length} values, expected ${sizes[i]}`);
    return data;
  });
  const fx = file.tensors['family.x'];
  if (!fx) throw new LowrankError('invalid_file', `${where}: generator.safetensors lacks family.x`);
  return { config, params, familyX: tensorToFloat32(fx) };
}
