/**
 * A real registry serving the built catalog (web/dist) on a free port: fresh migrated
 * PostgreSQL database, Redis, blobs in a temporary directory, seeded through its own API.
 * Closed (and the database dropped) when the test file ends.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@lowrank/crds/log';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createApp } from '../../../../registry-api/src/app.ts';
import { FilesystemBlobStore } from '../../../../registry-api/src/blobs/fs-store.ts';
import type { PrismaClient } from '../../../../registry-api/src/generated/prisma/client.ts';
import { jobQueue } from '../../../../registry-api/src/jobs/queue.ts';
import { closeBeforeDrop, migratedPrisma } from '../../../../registry-api/test/support/database.ts';
import { serviceEnv } from '../../../src/env.ts';

export const WEB_DIST = join(import.meta.dirname, '..', '..', '..', '..', 'web', 'dist');

export interface CatalogRegistry {
  base: string;
  prisma: PrismaClient;
}

const quiet = createLogger('web-test', { write: () => {} } as never);

export async function startCatalogRegistry(): Promise<CatalogRegistry> {
  if (!existsSync(join(WEB_DIST, 'index.html'))) throw new Error(`${WEB_DIST} has no build: run scripts/build-web (npm test does)`);
  const { url, prisma } = await migratedPrisma();
  const db = new pg.Pool({ connectionString: url });
  const redis = new Redis(serviceEnv('REDIS_URL'));
  const jobs = jobQueue(redis);
  const blobDir = mkdtempSync(join(tmpdir(), 'lowrank-web-blobs-'));
  const blobs = new FilesystemBlobStore(blobDir);
  const server: Server = createApp({ db, redis, prisma, blobs, jobs, log: quiet, webDist: WEB_DIST }).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  closeBeforeDrop(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await Promise.allSettled([jobs.close(), db.end(), prisma.$disconnect()]);
    redis.disconnect();
    rmSync(blobDir, { recursive: true, force: true });
  });
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, prisma };
}
