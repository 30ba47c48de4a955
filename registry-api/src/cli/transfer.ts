/** `lora push` and `lora pull`: a directory to a version and back, verified by sha256. */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { LowrankError } from '@lowrank/crds/errors';
import type { RegistryClient } from './client.ts';
import { uploadDirect } from './direct-upload.ts';
import { getToFile } from './http-stream.ts';
import { eachLimit } from './limit.ts';
import { progress } from './progress.ts';

/** Files at least this large go straight to S3 when the registry offers it. */
const DIRECT_MIN_BYTES = 16 * 2 ** 20;
/** Files sent at once (a multipart upload also sends 4 parts at once). */
const FILES_AT_ONCE = 4;
/** Files received at once: one stream each, so more of them keep a fast link busy. */
const PULLS_AT_ONCE = 8;

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
  const files: LocalFile[] = listFiles(dir).map((abs) => ({
    path: relative(dir, abs).split(sep).join('/'),
    abs,
    size: statSync(abs).size,
    digest: '',
  }));
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
  const bar = progress(
    `push ${repo}`,
    files.reduce((n, f) => n + f.size, 0),
  );
  let uploaded = 0;
  try {
    // Each lane hashes its file when it reaches it, so hashing overlaps the other lanes' transfers.
    await eachLimit(files, FILES_AT_ONCE, async (f) => {
      f.digest = await sha256File(f.abs);
      const head = await client.request('HEAD', `/v1/repos/${repo}/blobs/${f.digest}`);
      if (head.status === 200) {
        bar.add(f.size);
        return;
      }
      uploaded++;
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
  return { number: version.number, uploaded, skipped: files.length - uploaded };
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
    await eachLimit(todo, PULLS_AT_ONCE, async (f) => {
      const target = join(dir, ...f.path.split('/'));
      mkdirSync(dirname(target), { recursive: true });
      const tmp = `${target}.lowrank-partial`;
      // direct=1: straight from S3 when the registry can (the digest is checked below either way).
      const url = `${client.base}/v1/repos/${repo}/versions/${version.number}/files/${f.path.split('/').map(encodeURIComponent).join('/')}?direct=1`;
      let got: string;
      try {
        got = (await getToFile(url, client.headers(), tmp, (n) => bar.add(n))).digest;
      } catch (err) {
        if (existsSync(tmp)) unlinkSync(tmp);
        if (err instanceof LowrankError) throw err;
        throw new LowrankError('unavailable', `download of ${f.path} failed: ${(err as Error).message}; run the pull again to resume`);
      }
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
