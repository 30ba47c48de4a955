/**
 * Training checkpoints kept in the registry under the job (not only in the work dir), so
 * a retry on another machine (a Kubernetes pod rescheduled elsewhere) resumes where the
 * last attempt stopped. Files go up by digest, then the record; the registry keeps the
 * newest two and releases them when the job ends. Downloads are verified against their
 * digests and land in a temporary directory renamed into place only when complete.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import type { RegistryClient } from '@lowrank/registry-api/cli/client';

interface RemoteCheckpoint {
  step: number;
  metadata: Record<string, unknown>;
  files: { path: string; digest: string; size: number }[];
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** Uploads the files of a complete local checkpoint directory and records it as `step`. */
export async function pushCheckpoint(
  client: RegistryClient,
  jobId: string,
  dir: string,
  step: number,
  metadata: Record<string, unknown>,
): Promise<void> {
  const files: RemoteCheckpoint['files'] = [];
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue; // temporaries of an interrupted write
    const path = join(dir, name);
    const size = statSync(path).size;
    const digest = await sha256File(path);
    await client.request('PUT', `/v1/jobs/${jobId}/checkpoints/blobs/${digest}`, {
      raw: Readable.toWeb(createReadStream(path)) as RequestInit['body'],
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      duplex: 'half',
    });
    files.push({ path: name, digest, size });
  }
  await client.request('POST', `/v1/jobs/${jobId}/checkpoints`, { body: { step, metadata, files } });
}

/**
 * Downloads the job's newest registry checkpoint into `root/<dirName(step)>` and returns
 * that directory with the checkpoint's metadata; undefined when the job has none.
 */
export async function pullLatestCheckpoint(
  client: RegistryClient,
  jobId: string,
  root: string,
  dirName: (step: number) => string,
): Promise<{ dir: string; step: number; metadata: Record<string, unknown> } | undefined> {
  const { items } = await client.json<{ items: RemoteCheckpoint[] }>('GET', `/v1/jobs/${jobId}/checkpoints`);
  const latest = items[0];
  if (!latest) return undefined;
  const dir = join(root, dirName(latest.step));
  const partial = `${dir}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  for (const f of latest.files) {
    const res = await client.request('GET', `/v1/jobs/${jobId}/checkpoints/${latest.step}/files/${encodeURIComponent(f.path)}`);
    if (!res.body) throw new LowrankError('unavailable', `checkpoint file ${f.path} came back empty; retry`);
    const target = join(partial, f.path);
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(target));
    const got = await sha256File(target);
    if (got !== f.digest)
      throw new LowrankError('unavailable', `checkpoint file ${f.path} hashed to ${got}, not ${f.digest}; the download was damaged: retry`);
  }
  rmSync(dir, { recursive: true, force: true });
  renameSync(partial, dir);
  return { dir, step: latest.step, metadata: latest.metadata };
}
