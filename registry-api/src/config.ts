/**
 * The registry's configuration, from the environment, checked at start with errors that
 * say which variable to fix. Embedded defaults: blobs on the local filesystem.
 *   LOWRANK_HOST (127.0.0.1), LOWRANK_PORT (8080; 0 = any free port), DATABASE_URL, REDIS_URL,
 *   LOWRANK_BLOB_STORE (filesystem | s3), LOWRANK_DATA_DIR (<repo>/.lowrank, filesystem blobs),
 *   S3_ENDPOINT, S3_REGION, S3_BUCKET (lowrank), S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_FORCE_PATH_STYLE,
 *   LOWRANK_S3_SINGLE_PUT_MAX_BYTES (1 GiB: direct uploads up to it go in one S3-checked request; 0 = multipart),
 *   LOWRANK_MAX_BLOB_BYTES (20 GiB)
 */
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import { FilesystemBlobStore } from './blobs/fs-store.ts';
import { S3BlobStore } from './blobs/s3-store.ts';
import type { BlobStore } from './blobs/store.ts';

export interface Config {
  host: string;
  port: number;
  databaseUrl: string;
  redisUrl: string;
  maxBlobBytes: number;
  /** Run post-processing (diagnostics, scheduled GC) in this process. */
  postprocess: boolean;
  /** GC runs every gcEveryMs and deletes blobs unreferenced for longer than gcGraceMs. */
  gcEveryMs: number;
  gcGraceMs: number;
  /** Requests per minute per token and per anonymous address; 0 turns limiting off. */
  rateLimitPerToken: number;
  rateLimitAnonymous: number;
  trustProxy: number | undefined;
  blobs: () => Promise<BlobStore>;
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v)
    throw new LowrankError('invalid_request', `${name} is not set; \`scripts/services start\` writes it to .lowrank/services/services.env`);
  return v;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new LowrankError('invalid_request', `${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const kind = env.LOWRANK_BLOB_STORE ?? 'filesystem';
  if (kind !== 'filesystem' && kind !== 's3')
    throw new LowrankError('invalid_request', `LOWRANK_BLOB_STORE must be filesystem or s3, got "${kind}"`);
  const dataDir = env.LOWRANK_DATA_DIR ?? join(import.meta.dirname, '..', '..', '.lowrank');
  const blobs =
    kind === 'filesystem'
      ? async () => new FilesystemBlobStore(join(dataDir, 'blobs'))
      : async () => {
          const store = new S3BlobStore({
            bucket: env.S3_BUCKET ?? 'lowrank',
            ...(env.LOWRANK_S3_PUBLIC_ENDPOINT ? { publicEndpoint: env.LOWRANK_S3_PUBLIC_ENDPOINT } : {}),
            singlePutMaxBytes: integer(env, 'LOWRANK_S3_SINGLE_PUT_MAX_BYTES', 2 ** 30, 0, 5 * 2 ** 30),
            client: {
              endpoint: required(env, 'S3_ENDPOINT'),
              region: env.S3_REGION ?? 'us-east-1',
              forcePathStyle: env.S3_FORCE_PATH_STYLE === 'true',
              credentials: { accessKeyId: required(env, 'S3_ACCESS_KEY_ID'), secretAccessKey: required(env, 'S3_SECRET_ACCESS_KEY') },
            },
          });
          await store.ensureBucket();
          return store;
        };
  return {
    host: env.LOWRANK_HOST ?? '127.0.0.1',
    port: integer(env, 'LOWRANK_PORT', 8080, 0, 65535),
    databaseUrl: required(env, 'DATABASE_URL'),
    redisUrl: required(env, 'REDIS_URL'),
    maxBlobBytes: integer(env, 'LOWRANK_MAX_BLOB_BYTES', 20 * 2 ** 30, 1, Number.MAX_SAFE_INTEGER),
    postprocess: env.LOWRANK_POSTPROCESS !== 'off',
    gcEveryMs: integer(env, 'LOWRANK_GC_EVERY_MS', 60 * 60 * 1000, 1000, 7 * 24 * 60 * 60 * 1000),
    // A day: longer than any upload session, so a blob uploaded for a commit in flight is never taken.
    gcGraceMs: integer(env, 'LOWRANK_GC_GRACE_MS', 24 * 60 * 60 * 1000, 0, 365 * 24 * 60 * 60 * 1000),
    rateLimitPerToken: integer(env, 'LOWRANK_RATE_LIMIT', 1200, 0, 1_000_000),
    rateLimitAnonymous: integer(env, 'LOWRANK_RATE_LIMIT_ANONYMOUS', 120, 0, 1_000_000),
    trustProxy: env.LOWRANK_TRUST_PROXY ? integer(env, 'LOWRANK_TRUST_PROXY', 0, 0, 10) : undefined,
    blobs,
  };
}
