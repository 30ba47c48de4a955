#!/usr/bin/env node
/**
 * Starts the registry: reads its configuration from the environment, connects to
 * PostgreSQL and Redis, listens, and shuts down gracefully on SIGTERM/SIGINT.
 *   LOWRANK_HOST (127.0.0.1), LOWRANK_PORT (8080; 0 picks a free port), DATABASE_URL, REDIS_URL
 */
import { LowrankError } from '@lowrank/crds/errors';
import { createLogger } from '@lowrank/crds/log';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createApp } from './app.ts';
import { migrate } from './db/migrate.ts';

const log = createLogger('registry-api');

function required(name: string): string {
  const value = process.env[name];
  if (!value)
    throw new LowrankError(
      'invalid_request',
      `${name} is not set; start the services with \`scripts/services start\` and load .lowrank/services/services.env`,
    );
  return value;
}

async function main(): Promise<void> {
  const host = process.env.LOWRANK_HOST ?? '127.0.0.1';
  const port = Number(process.env.LOWRANK_PORT ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new LowrankError('invalid_request', `LOWRANK_PORT must be a port number, got "${process.env.LOWRANK_PORT}"`);
  const databaseUrl = required('DATABASE_URL');
  const migrations = await migrate(databaseUrl);
  log.info({ applied: migrations.applied, alreadyApplied: migrations.alreadyApplied.length }, 'database migrated');
  const db = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  const redis = new Redis(required('REDIS_URL'), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  await db.query('select 1');
  const app = createApp({ db, redis, log });
  const server = app.listen(port, host);
  await new Promise<void>((res, rej) => {
    server.once('listening', res);
    server.once('error', rej);
  });
  const addr = server.address();
  const url = `http://${host}:${addr && typeof addr === 'object' ? addr.port : port}`;
  log.info({ url }, `registry listening on ${url}`);
  const shutdown = (signal: string) => {
    log.info({ signal }, 'shutting down');
    server.close(async () => {
      await Promise.allSettled([db.end(), redis.quit()]);
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
