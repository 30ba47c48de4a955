/**
 * The local run's first administrator. Only when LOWRANK_BOOTSTRAP_TOKEN_FILE is set (the
 * one-command run sets it; a cluster deployment does not) and the database has no users:
 * creates organisation `local`, team `demo`, admin user `admin`, and an admin token written
 * to that file with mode 0600, so a new user can push right away.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createToken } from './auth/tokens.ts';
import type { PrismaClient } from './generated/prisma/client.ts';

export async function bootstrapLocalAdmin(db: PrismaClient, tokenFile: string): Promise<boolean> {
  if ((await db.user.count()) > 0) return false;
  const org = await db.organization.create({ data: { name: 'local', displayName: 'Local' } });
  const team = await db.team.create({ data: { name: 'demo', organizationId: org.id } });
  const user = await db.user.create({
    data: { handle: 'admin', isAdmin: true, memberships: { create: { teamId: team.id, role: 'maintainer' } } },
  });
  const { token } = await createToken(db, { userId: user.id, name: 'local bootstrap', scope: 'admin', expiresInDays: 0 });
  mkdirSync(dirname(tokenFile), { recursive: true, mode: 0o700 });
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  chmodSync(tokenFile, 0o600);
  await db.auditEvent.create({ data: { actorId: user.id, action: 'bootstrap.admin', target: 'user/admin', details: { tokenFile } } });
  return true;
}
