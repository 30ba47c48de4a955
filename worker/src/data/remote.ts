/**
 * Datasets given by `uri`: file:// is read in place; https:// and s3:// are downloaded
 * into the work dir (kept there, so a retry reuses a complete download) and read like a
 * local path. An s3:// key that ends in "/" is a prefix: every data file under it (and
 * the Hugging Face layout files dataset_dict.json, state.json) comes down with its
 * relative path. S3 credentials and endpoint come from the standard AWS environment
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3 for MinIO
 * and other S3-compatible stores). Downloads land in a temporary name renamed into place.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { LowrankError } from '@lowrank/crds/errors';

const DATA_FILE = /\.(jsonl|parquet|arrow)$/i;
const LAYOUT_FILE = /(^|\/)(dataset_dict|state|dataset_info)\.json$/;

interface Log {
  info: (obj: object, msg: string) => void;
}

/** Schemes this worker fetches; the others are refused before any work starts. */
export function checkDatasetUri(uri: string, field: string): void {
  const scheme = /^([a-z0-9]+):\/\//.exec(uri)?.[1];
  if (scheme === 'file' || scheme === 'https' || scheme === 'http' || scheme === 's3') {
    if (scheme === 's3' && !/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(uri))
      throw new LowrankError('invalid_spec', `${field}: ${uri} is not s3://<bucket>/<key or prefix/>`);
    return;
  }
  throw new LowrankError(
    'invalid_spec',
    `${field}: ${scheme}:// datasets are not fetched by this worker; use s3://, https:// or file://, or download it (e.g. \`huggingface-cli download --repo-type dataset\`) and give path`,
  );
}

const cacheDir = (workDir: string, uri: string) => join(workDir, 'datasets', createHash('sha256').update(uri).digest('hex').slice(0, 16));

async function save(body: ReadableStream | Readable, target: string): Promise<void> {
  mkdirSync(dirname(target), { recursive: true });
  const partial = `${target}.partial`;
  await pipeline(body instanceof Readable ? body : Readable.fromWeb(body), createWriteStream(partial));
  renameSync(partial, target);
}

async function fetchHttp(uri: string, dir: string): Promise<string> {
  const name = posix.basename(new URL(uri).pathname);
  if (!DATA_FILE.test(name)) throw new LowrankError('invalid_spec', `spec.dataset.uri: ${uri} must name a .jsonl, .parquet or .arrow file`);
  const target = join(dir, name);
  if (existsSync(target)) return target;
  let res: Response;
  try {
    res = await fetch(uri, { redirect: 'follow' });
  } catch (err) {
    throw new LowrankError(
      'unavailable',
      `spec.dataset.uri: cannot reach ${uri} (${(err as Error).cause ?? (err as Error).message}); retrying may help`,
    );
  }
  if (!res.ok || !res.body) {
    const code = res.status >= 500 || res.status === 429 ? 'unavailable' : 'invalid_spec';
    throw new LowrankError(code, `spec.dataset.uri: ${uri} answered HTTP ${res.status}; check the address and its access`);
  }
  await save(res.body as ReadableStream, target);
  return target;
}

function s3Client(): S3Client {
  const endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  return new S3Client({
    region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

function s3Error(uri: string, err: unknown): LowrankError {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  if (status === 404 || e.name === 'NoSuchKey' || e.name === 'NoSuchBucket')
    return new LowrankError('invalid_spec', `spec.dataset.uri: ${uri} does not exist (${e.name})`);
  if (status === 403 || status === 401)
    return new LowrankError(
      'invalid_spec',
      `spec.dataset.uri: access to ${uri} was refused (${e.name}); check the worker's AWS credentials`,
    );
  return new LowrankError('unavailable', `spec.dataset.uri: reading ${uri} failed (${e.name ?? ''} ${e.message ?? ''}); retrying may help`);
}

async function fetchS3(uri: string, dir: string): Promise<string> {
  const u = new URL(uri);
  const bucket = u.hostname;
  const key = decodeURIComponent(u.pathname.replace(/^\//, ''));
  const s3 = s3Client();
  try {
    if (key !== '' && !key.endsWith('/')) {
      const name = posix.basename(key);
      if (!DATA_FILE.test(name))
        throw new LowrankError(
          'invalid_spec',
          `spec.dataset.uri: ${uri} must name a .jsonl, .parquet or .arrow file, or a prefix ending in /`,
        );
      const target = join(dir, name);
      if (!existsSync(target)) await save((await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body as Readable, target);
      return target;
    }
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: key, ...(token ? { ContinuationToken: token } : {}) }));
      for (const o of page.Contents ?? []) if (o.Key && (DATA_FILE.test(o.Key) || LAYOUT_FILE.test(o.Key))) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    if (!keys.some((k) => DATA_FILE.test(k)))
      throw new LowrankError('invalid_spec', `spec.dataset.uri: no .jsonl, .parquet or .arrow object under ${uri}`);
    const root = join(dir, 'prefix');
    for (const k of keys.sort()) {
      const rel = k.slice(key.length);
      if (rel.split('/').some((p) => p === '..' || p === '')) continue; // never outside the download dir
      const target = join(root, ...rel.split('/'));
      if (!existsSync(target)) await save((await s3.send(new GetObjectCommand({ Bucket: bucket, Key: k }))).Body as Readable, target);
    }
    return root;
  } catch (err) {
    if (err instanceof LowrankError) throw err;
    throw s3Error(uri, err);
  } finally {
    s3.destroy();
  }
}

/** A local path for the dataset at `uri` (downloaded into the work dir when remote). */
export async function fetchDataset(uri: string, workDir: string, log: Log): Promise<string> {
  checkDatasetUri(uri, 'spec.dataset.uri');
  if (uri.startsWith('file://')) return fileURLToPath(uri);
  const dir = cacheDir(workDir, uri);
  const started = Date.now();
  const path = uri.startsWith('s3://') ? await fetchS3(uri, dir) : await fetchHttp(uri, dir);
  log.info({ event: 'dataset-fetched', uri, path, ms: Date.now() - started }, `dataset ${uri} is at ${path}`);
  return path;
}
