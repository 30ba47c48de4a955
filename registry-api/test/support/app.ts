/** A registry app on a free port over a fresh migrated database and a fresh bucket. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '@lowrank/crds/log';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createApp } from '../../src/app.ts';
import type { BlobStore } from '../../src/blobs/store.ts';
import type { PrismaClient } from '../../src/generated/prisma/client.ts';
import { jobQueue } from '../../src/jobs/queue.ts';
import { type PostprocessQueue, postprocessQueue } from '../../src/postprocess/queue.ts';
import { startPostprocessWorker } from '../../src/postprocess/worker.ts';
import type { RateLimitOptions } from '../../src/rate-limit.ts';
import { closeBeforeDrop, migratedPrisma } from './database.ts';
import { freshBucket } from './s3.ts';

export interface TestRegistry {
  base: string;
  prisma: PrismaClient;
  blobs: BlobStore;
  redis: Redis;
  db: pg.Pool;
  postprocess?: PostprocessQueue;
  /** The test bucket behind an S3 store, and a raw client to look behind the store's back. */
  bucket: string;
  raw: import('@aws-sdk/client-s3').S3Client;
}

const quiet = createLogger('registry-test', { write: () => {} } as never);

/** postprocess: queue diagnostics on commit and run the post-processing worker (give it its own Redis database). */
export async function startRegistry(
  options: {
    redis?: Redis;
    maxBlobBytes?: number;
    postprocess?: boolean;
    blobs?: BlobStore;
    rateLimit?: RateLimitOptions;
    /** Direct uploads up to this size in one request (the store's default: 1 GiB; 0: always multipart). */
    singlePutMaxBytes?: number;
  } = {},
): Promise<TestRegistry> {
  const { url, prisma } = await migratedPrisma();
  const {
    store: s3,
    raw,
    bucket,
  } = await freshBucket('', options.singlePutMaxBytes === undefined ? {} : { singlePutMaxBytes: options.singlePutMaxBytes });
  const store = options.blobs ?? s3;
  const db = new pg.Pool({ connectionString: url });
  const redis = options.redis ?? new Redis(serviceEnv('REDIS_URL'));
  const jobs = jobQueue(redis);
  const postprocess = options.postprocess ? postprocessQueue(redis) : undefined;
  const postWorker = options.postprocess ? startPostprocessWorker({ redis, prisma, blobs: store, log: quiet }) : undefined;
  const server: Server = createApp({
    db,
    redis,
    prisma,
    blobs: store,
    jobs,
    ...(postprocess ? { postprocess } : {}),
    ...(options.rateLimit ? { rateLimit: options.rateLimit } : {}),
    log: quiet,
    ...(options.maxBlobBytes ? { maxBlobBytes: options.maxBlobBytes } : {}),
  }).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  closeBeforeDrop(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await postWorker?.close();
    await Promise.allSettled([jobs.close(), postprocess?.close(), db.end(), prisma.$disconnect()]);
    redis.disconnect();
    s3.destroy();
    raw.destroy();
  });
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    prisma,
    blobs: store,
    redis,
    db,
    bucket,
    raw,
    ...(postprocess ? { postprocess } : {}),
  };
}
