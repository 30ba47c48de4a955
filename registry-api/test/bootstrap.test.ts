/** The local run's first administrator: created once, token private and working. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { authenticate } from '../src/auth/principal.ts';
import { bootstrapLocalAdmin } from '../src/bootstrap.ts';
import { migratedPrisma } from './support/database.ts';

it('creates the admin and its token once, on an empty database only', async () => {
  const { prisma } = await migratedPrisma();
  const file = join(mkdtempSync(join(tmpdir(), 'bootstrap-')), 'admin-token');
  assert.equal(await bootstrapLocalAdmin(prisma, file), true);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const p = await authenticate(prisma, `Bearer ${readFileSync(file, 'utf8').trim()}`);
  assert.deepEqual([p?.handle, p?.isAdmin, p?.scope], ['admin', true, 'admin']);
  assert.equal(await bootstrapLocalAdmin(prisma, file), false, 'never twice, never over existing users');
  assert.equal(await prisma.user.count(), 1);
  await prisma.$disconnect();
});
