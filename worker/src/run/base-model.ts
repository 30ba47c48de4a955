/**
 * The base model a training job adapts: a local Hugging Face directory (spec.baseModel.path)
 * or a base version stored in the registry (repository + version | tag, pulled into the
 * work dir and verified). Nothing is fetched from the Hub: a bare `name` must come with
 * `path`. The lineage parent is the registry version, or hf:<name> / file:<dir>.
 */
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import type { RegistryClient } from '@lowrank/registry-api/cli/client';
import { pull } from '@lowrank/registry-api/cli/transfer';

export interface ResolvedBase {
  dir: string;
  /** What the output repository and adapter_config.json name as the base. */
  name: string;
  lineage: { parent: string } | { parentRef: string };
}

export async function resolveBase(
  base: AdapterJobSpecDefaulted['baseModel'],
  client: RegistryClient | undefined,
  workDir: string,
): Promise<ResolvedBase> {
  if (!base)
    throw new LowrankError(
      'invalid_spec',
      'spec.baseModel is required in mode train: give path (a local Hugging Face directory) or repository',
    );
  if (base.repository) {
    if (!client)
      throw new LowrankError('invalid_request', 'spec.baseModel.repository needs a registry: set LOWRANK_REGISTRY_URL and LOWRANK_TOKEN');
    const wanted = base.version !== undefined ? String(base.version) : (base.tag ?? 'latest');
    const v = await client.json<{ number: number }>('GET', `/v1/repos/${base.repository}/versions/${encodeURIComponent(wanted)}`);
    const dir = base.path ? resolve(base.path) : join(workDir, 'base', base.repository, String(v.number));
    await pull(client, base.repository, String(v.number), dir);
    checkDir(dir);
    return { dir, name: base.name ?? base.repository, lineage: { parent: `${base.repository}@${v.number}` } };
  }
  if (!base.path)
    throw new LowrankError(
      'invalid_spec',
      `spec.baseModel.path: this worker does not download from the Hub; give the local directory of ${base.name ?? 'the base model'} (config.json, *.safetensors, tokenizer.json) or a registry repository`,
    );
  const dir = resolve(base.path);
  checkDir(dir);
  return { dir, name: base.name ?? dir, lineage: { parentRef: base.name ? `hf:${base.name}` : `file:${dir}` } };
}

function checkDir(dir: string): void {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new LowrankError('invalid_file', `spec.baseModel.path: ${dir} is not a directory (a Hugging Face model directory is expected)`);
  if (!existsSync(join(dir, 'config.json'))) throw new LowrankError('invalid_file', `spec.baseModel.path: ${dir} has no config.json`);
}
