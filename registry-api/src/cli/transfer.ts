/** `lora push` and `lora pull`: a directory to a version and back, verified by sha256. */
import { createHash } from 'node:crypto';
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import type { RegistryClient } from './client.ts';
import { uploadDirect } from './direct-upload.ts';

/** Files at least this large go straight to S3 when the registry offers it. */
const DIRECT_MIN_BYTES = 16 * 2 ** 20;
/** Files transferred at once (a direct upload also sends 4 parts at once). */
const FILES_AT_ONCE = 4;

/** Runs fn over items, at most `limit` at a time; the first failure rejects (the others finish). */
async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

import { progress } from './progress.ts';

interface LocalFile {
  path: string;
  abs: string;
  size: number;
  digest: string;
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue; // .git, .cache, editor files
    const abs = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(abs));
    else if (entry.isFile()) out.push(abs);
  }
  return out.sort();
}

async function sha256File(abs: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(abs)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

const counting = (onBytes: (n: number) => void) =>
  new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });

export interface PushOptions {
  tags?: string[];
  number?: number;
  method?: string;
  lineage?: { relation: string; parent?: string; parentRef?: string; weight?: number; parameters?: Record<string, unknown> }[];
  methodMetadata?: Record<string, unknown>;
  metrics?: Record<string, unknown>;
  /** The registry job that made the version. */
  jobId?: string;
}

/** What PEFT's adapter_config.json says about the method, when the caller does not. */
function methodOf(config: Record<string, unknown>): string | undefined {
  if (config.peft_type !== 'LORA') return typeof config.peft_type === 'string' ? config.peft_type.toLowerCase() : undefined;
  if (config.use_dora) return 'dora';
  if (config.use_rslora) return 'rslora';
  return 'lora';
}

export async function push(
  client: RegistryClient,
  dir: string,
  repo: string,
  options: PushOptions = {},
): Promise<{ number: number; uploaded: number; skipped: number }> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new LowrankError('invalid_request', `${dir} is not a directory`);
  const files: LocalFile[] = [];
  for (const abs of listFiles(dir)) {
    files.push({ path: relative(dir, abs).split(sep).join('/'), abs, size: statSync(abs).size, digest: await sha256File(abs) });
  }
  if (files.length === 0) throw new LowrankError('invalid_request', `${dir} has no files to push`);
  let config: Record<string, unknown> = {};
  const configFile = files.find((f) => f.path === 'adapter_config.json');
  if (configFile) {
    try {
      config = JSON.parse(readFileSync(configFile.abs, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new LowrankError('invalid_file', `${configFile.abs} is not valid JSON: ${(err as Error).message}`);
    }
  }
  const todo: LocalFile[] = [];
  for (const f of files) {
    const head = await client.request('HEAD', `/v1/repos/${repo}/blobs/${f.digest}`);
    if (head.status !== 200) todo.push(f);
  }
  const bar = progress(
    `push ${repo}`,
    todo.reduce((n, f) => n + f.size, 0),
  );
  try {
    await eachLimit(todo, FILES_AT_ONCE, async (f) => {
      if (f.size >= DIRECT_MIN_BYTES && (await uploadDirect(client, repo, f, (n) => bar.add(n)))) {
        bar.fileDone(f.path, { size: f.size, digest: f.digest, direct: true });
        return;
      }
      const body = Readable.toWeb(createReadStream(f.abs).pipe(counting((n) => bar.add(n)))) as ReadableStream;
      await client.request('PUT', `/v1/repos/${repo}/blobs/${f.digest}`, {
        raw: body,
        duplex: 'half',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(f.size) },
      });
      bar.fileDone(f.path, { size: f.size, digest: f.digest });
    });
  } finally {
    bar.stop();
  }
  const method = options.method ?? methodOf(config);
  const rank = typeof config.r === 'number' ? config.r : undefined;
  const version = await client.json<{ number: number }>('POST', `/v1/repos/${repo}/versions`, {
    files: files.map((f) => ({ path: f.path, digest: f.digest, size: f.size })),
    config,
    ...(method ? { method } : {}),
    ...(rank ? { rank } : {}),
    ...(options.number ? { number: options.number } : {}),
    ...(options.tags?.length ? { tags: options.tags } : {}),
    ...(options.lineage?.length ? { lineage: options.lineage } : {}),
    ...(options.methodMetadata ? { methodMetadata: options.methodMetadata } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
    ...(options.jobId ? { jobId: options.jobId } : {}),
  });
  return { number: version.number, uploaded: todo.length, skipped: files.length - todo.length };
}

export async function pull(
  client: RegistryClient,
  repo: string,
  ref: string,
  dir: string,
): Promise<{ number: number; downloaded: number; kept: number }> {
  const version = await client.json<{
    number: number;
    files: { path: string; digest: string; size: number }[];
    yanked: { reason: string } | null;
  }>('GET', `/v1/repos/${repo}/versions/${encodeURIComponent(ref)}`);
  if (version.yanked) process.stderr.write(`warning: ${repo}@${version.number} is yanked: ${version.yanked.reason}\n`);
  // Resumable: files already present with the right content are kept.
  const todo = [];
  for (const f of version.files) {
    const target = join(dir, ...f.path.split('/'));
    if (existsSync(target) && statSync(target).size === f.size && (await sha256File(target)) === f.digest) continue;
    todo.push(f);
  }
  const bar = progress(
    `pull ${repo}@${version.number}`,
    todo.reduce((n, f) => n + f.size, 0),
  );
  try {
    await eachLimit(todo, FILES_AT_ONCE, async (f) => {
      const target = join(dir, ...f.path.split('/'));
      mkdirSync(dirname(target), { recursive: true });
      const tmp = `${target}.lowrank-partial`;
      const res = await client.request(
        'GET',
        // direct=1: straight from S3 when the registry can (the digest is checked below either way).
        `/v1/repos/${repo}/versions/${version.number}/files/${f.path.split('/').map(encodeURIComponent).join('/')}?direct=1`,
      );
      const hash = createHash('sha256');
      try {
        await pipeline(
          Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
          counting((n) => bar.add(n)),
          new Transform({
            transform(chunk: Buffer, _enc, cb) {
              hash.update(chunk);
              cb(null, chunk);
            },
          }),
          createWriteStream(tmp),
        );
      } catch (err) {
        if (existsSync(tmp)) unlinkSync(tmp);
        throw new LowrankError('unavailable', `download of ${f.path} failed: ${(err as Error).message}; run the pull again to resume`);
      }
      const got = `sha256:${hash.digest('hex')}`;
      if (got !== f.digest) {
        unlinkSync(tmp);
        throw new LowrankError(
          'invalid_file',
          `${f.path} arrived with digest ${got}, expected ${f.digest}; nothing was written, run the pull again`,
        );
      }
      renameSync(tmp, target);
      bar.fileDone(f.path, { size: f.size, digest: f.digest });
    });
  } finally {
    bar.stop();
  }
  return { number: version.number, downloaded: todo.length, kept: version.files.length - todo.length };
}
