/**
 * Job inputs: an adapter named by registry reference ({repository, version | tag}), a local
 * PEFT directory (path), or both (a local copy of a registry version, whose files are
 * checked against the version's digests and completed from the registry if they differ).
 */
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { RegistryClient } from '@lowrank/registry-api/cli/client';
import { pull } from '@lowrank/registry-api/cli/transfer';
import { type PeftAdapter, readPeftAdapter } from '../peft/adapter-dir.ts';

export interface AdapterRef {
  repository?: string;
  version?: number;
  tag?: string;
  path?: string;
}

export interface FetchedAdapter {
  dir: string;
  adapter: PeftAdapter;
  /** namespace/name@number for registry inputs (a lineage parent). */
  parent?: string;
  /** What the lineage records for an unregistered directory. */
  parentRef?: string;
}

export async function fetchAdapter(
  ref: AdapterRef,
  where: string,
  client: RegistryClient | undefined,
  workDir: string,
): Promise<FetchedAdapter> {
  if (ref.repository) {
    if (!client)
      throw new LowrankError(
        'invalid_request',
        `${where} names registry repository ${ref.repository}, but no registry is configured: set LOWRANK_REGISTRY_URL and LOWRANK_TOKEN`,
      );
    const wanted = ref.version !== undefined ? String(ref.version) : (ref.tag ?? 'latest');
    const version = await client.json<{ number: number }>('GET', `/v1/repos/${ref.repository}/versions/${encodeURIComponent(wanted)}`);
    const dir = ref.path ? resolve(ref.path) : join(workDir, 'inputs', ref.repository, String(version.number));
    await pull(client, ref.repository, String(version.number), dir);
    return { dir, adapter: readAt(dir, where), parent: `${ref.repository}@${version.number}` };
  }
  if (!ref.path) throw new LowrankError('invalid_spec', `${where}: give repository (with version or tag) or path`);
  const dir = resolve(ref.path);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new LowrankError('invalid_file', `${where}.path: ${dir} is not a directory (a PEFT adapter directory is expected)`);
  return { dir, adapter: readAt(dir, where), parentRef: `file:${dir}` };
}

function readAt(dir: string, where: string): PeftAdapter {
  try {
    return readPeftAdapter(dir);
  } catch (err) {
    if (err instanceof LowrankError) throw new LowrankError(err.code, `${where}: ${err.message}`);
    throw err;
  }
}
