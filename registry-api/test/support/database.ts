/** Fresh, migrated databases on the test PostgreSQL, dropped when the test file ends. */
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import { serviceEnv } from '@lowrank/e2e/env';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { migrate } from '../../src/db/migrate.ts';
import { PrismaClient } from '../../src/generated/prisma/client.ts';

const created: string[] = [];
const closers: (() => Promise<void>)[] = [];

/** Closes what uses the test databases (apps, pools) before they are dropped. */
export function closeBeforeDrop(fn: () => Promise<void>): void {
  closers.push(fn);
}

// Registered at import, so it runs when the importing test file ends.
after(async () => {
  for (const close of closers.reverse()) await close();
  if (created.length === 0) return;
  const c = new pg.Client({ connectionString: serviceEnv('DATABASE_URL') });
  await c.connect();
  for (const name of created) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await c.end();
});

export async function freshDatabase(): Promise<string> {
  const admin = serviceEnv('DATABASE_URL');
  const name = `test_${randomBytes(6).toString('hex')}`;
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  created.push(name);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function migratedPrisma(): Promise<{ url: string; prisma: PrismaClient }> {
  const url = await freshDatabase();
  await migrate(url);
  return { url, prisma: new PrismaClient({ adapter: new PrismaPg({ connectionString: url }) }) };
}
