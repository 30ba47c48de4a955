#!/usr/bin/env node
/**
 * Starts the registry: checks its configuration (src/config.ts), migrates the database,
 * connects to PostgreSQL, Redis and the blob store, listens, and shuts down gracefully
 * on SIGTERM/SIGINT.
 */
import { join } from 'node:path';
import { createLogger } from '@lowrank/crds/log';
import { PrismaPg } from '@prisma/adapter-pg';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createApp } from './app.ts';
import { bootstrapLocalAdmin } from './bootstrap.ts';
import { loadConfig } from './config.ts';
import { migrate } from './db/migrate.ts';
import { PrismaClient } from './generated/prisma/client.ts';
import { jobQueue } from './jobs/queue.ts';
import { postprocessQueue } from './postprocess/queue.ts';
import { startPostprocessWorker } from './postprocess/worker.ts';

const log = createLogger('registry-api');

async function main(): Promise<void> {
  const config = loadConfig();
  const migrations = await migrate(config.databaseUrl);
  log.info({ applied: migrations.applied, alreadyApplied: migrations.alreadyApplied.length }, 'database migrated');
  const db = new pg.Pool({ connectionString: config.databaseUrl, max: 10 });
  // An idle client dropped by the server (restart, failover) is replaced on next use; without a listener it would crash the process.
  db.on('error', (err) => log.warn({ err }, 'idle PostgreSQL connection lost'));
  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: config.databaseUrl }) });
  const redis = new Redis(config.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  const tokenFile = process.env.LOWRANK_BOOTSTRAP_TOKEN_FILE;
  if (tokenFile && (await bootstrapLocalAdmin(prisma, tokenFile))) {
    log.info({ tokenFile }, `first start: created user admin (team demo); its admin token is in ${tokenFile}`);
  }
  const blobs = await config.blobs();
  log.info({ blobs: blobs.kind }, 'blob store ready');
  const jobs = jobQueue(redis);
  const postprocess = postprocessQueue(redis);
  const postWorker = config.postprocess ? startPostprocessWorker({ redis, prisma, blobs, log }) : undefined;
  if (postWorker) {
    await postprocess.scheduleGc(config.gcEveryMs, config.gcGraceMs);
    log.info(
      { gcEveryMs: config.gcEveryMs, gcGraceMs: config.gcGraceMs },
      'post-processing on: diagnostics for new versions, scheduled GC',
    );
  }
  const webDist = process.env.LOWRANK_WEB_DIST ?? join(import.meta.dirname, '..', '..', 'web', 'dist');
  const app = createApp({
    db,
    redis,
    prisma,
    blobs,
    jobs,
    postprocess,
    log,
    maxBlobBytes: config.maxBlobBytes,
    webDist,
    ...(config.rateLimitPerToken > 0
      ? { rateLimit: { windowMs: 60_000, perToken: config.rateLimitPerToken, anonymous: config.rateLimitAnonymous || 1 } }
      : {}),
    ...(config.trustProxy === undefined ? {} : { trustProxy: config.trustProxy }),
  });
  const server = app.listen(config.port, config.host);
  await new Promise<void>((res, rej) => {
    server.once('listening', res);
    server.once('error', rej);
  });
  const addr = server.address();
  const url = `http://${config.host}:${addr && typeof addr === 'object' ? addr.port : config.port}`;
  log.info({ url }, `registry listening on ${url}`);
  const shutdown = (signal: string) => {
    log.info({ signal }, 'shutting down');
    server.close(async () => {
      await postWorker?.close();
      await Promise.allSettled([jobs.close(), postprocess.close(), db.end(), redis.quit(), prisma.$disconnect()]);
      process.exit(0);
    });
    setTimeout(() => process.exit(1), 10_000).unref();
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  log.fatal({ err }, err instanceof Error ? err.message : String(err));
  process.exit(1);
});
