/**
 * A job's result lands as one new immutable version: the repository is created on first
 * push (spec.output.visibility), the version carries its lineage, method metadata,
 * metrics and the registry job that made it. A retried attempt whose earlier attempt
 * already committed (and then died before saying so) finds that version instead of
 * pushing a second one.
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { RegistryClient } from '@lowrank/registry-api/cli/client';
import { type PushOptions, push } from '@lowrank/registry-api/cli/transfer';

export interface OutputSpec {
  repository: string;
  tags?: string[];
  description?: string;
  visibility?: 'private' | 'internal' | 'public';
  labels?: Record<string, string | undefined>;
}

export interface VersionRef {
  repository: string;
  version: number;
  ref: string;
}

async function ensureRepository(client: RegistryClient, out: OutputSpec, baseModel: string): Promise<void> {
  const head = await client.request('GET', `/v1/repos/${out.repository}`).catch((err: unknown) => {
    if (err instanceof LowrankError && err.code === 'not_found') return undefined;
    throw err;
  });
  if (head) return;
  const [namespace, name] = out.repository.split('/') as [string, string];
  try {
    await client.json('POST', '/v1/repos', {
      namespace,
      name,
      baseModel,
      visibility: out.visibility ?? 'private',
      ...(out.description ? { description: out.description } : {}),
    });
  } catch (err) {
    // Another job created it meanwhile: fine.
    if (!(err instanceof LowrankError && err.code === 'conflict')) throw err;
  }
}

async function versionOfJob(client: RegistryClient, repository: string, jobId: string): Promise<number | undefined> {
  const list = await client.json<{ items: { number: number; job?: string | null }[] }>('GET', `/v1/repos/${repository}/versions`);
  return list.items.find((v) => v.job === jobId)?.number;
}

export async function publish(
  client: RegistryClient,
  dir: string,
  out: OutputSpec,
  baseModel: string,
  options: Omit<PushOptions, 'tags' | 'number'>,
): Promise<VersionRef> {
  await ensureRepository(client, out, baseModel);
  const labels = Object.fromEntries(Object.entries(out.labels ?? {}).filter(([, v]) => v !== undefined));
  const existing = options.jobId ? await versionOfJob(client, out.repository, options.jobId) : undefined;
  const number =
    existing ??
    (
      await push(client, dir, out.repository, {
        ...options,
        ...(out.tags?.length ? { tags: out.tags } : {}),
        methodMetadata: { ...(options.methodMetadata ?? {}), ...(Object.keys(labels).length ? { labels } : {}) },
      })
    ).number;
  return { repository: out.repository, version: number, ref: `${out.repository}@${number}` };
}
