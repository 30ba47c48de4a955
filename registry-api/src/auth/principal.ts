/**
 * Who is calling: resolved from `Authorization: Bearer <token>` on every request.
 * Anonymous callers get `null` and see only public repositories.
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { PrismaClient, TeamRole, TokenScope } from '../generated/prisma/client.ts';
import { hashToken, looksLikeToken, sameHash } from './tokens.ts';

export interface Principal {
  userId: string;
  handle: string;
  isAdmin: boolean;
  tokenId: string;
  scope: TokenScope;
  /** When set, the token acts only on this team. */
  tokenTeamId: string | null;
  /** teamId -> role, for the user's memberships. */
  teams: Map<string, TeamRole>;
}

/** Avoids a write per request: last-use timestamps are refreshed at most this often. */
const LAST_USED_RESOLUTION_MS = 60_000;

export async function authenticate(db: PrismaClient, authorization: string | undefined): Promise<Principal | null> {
  if (authorization === undefined || authorization === '') return null;
  const m = /^Bearer (\S+)$/i.exec(authorization);
  if (!m) throw new LowrankError('unauthorized', 'send the token as `Authorization: Bearer lrk_...`');
  const token = m[1] as string;
  if (!looksLikeToken(token))
    throw new LowrankError('unauthorized', 'this is not a lowrank token (they start with lrk_); create one with `lora login`');
  const hash = hashToken(token);
  const row = await db.apiToken.findUnique({ where: { hash }, include: { user: { include: { memberships: true } } } });
  if (!row || !sameHash(row.hash, hash)) throw new LowrankError('unauthorized', 'unknown token; create a new one with `lora login`');
  const now = Date.now();
  if (row.revokedAt) throw new LowrankError('unauthorized', `token ${row.prefix}… was revoked; create a new one with \`lora login\``);
  if (row.expiresAt && row.expiresAt.getTime() <= now)
    throw new LowrankError(
      'unauthorized',
      `token ${row.prefix}… expired on ${row.expiresAt.toISOString()}; create a new one with \`lora login\``,
    );
  if (!row.lastUsedAt || now - row.lastUsedAt.getTime() > LAST_USED_RESOLUTION_MS) {
    await db.apiToken.update({ where: { id: row.id }, data: { lastUsedAt: new Date(now) } });
  }
  return {
    userId: row.userId,
    handle: row.user.handle,
    isAdmin: row.user.isAdmin,
    tokenId: row.id,
    scope: row.scope,
    tokenTeamId: row.teamId,
    teams: new Map(row.user.memberships.map((ms) => [ms.teamId, ms.role])),
  };
}
