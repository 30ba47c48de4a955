/**
 * API tokens: 256 random bits, shown to the user once as `lrk_<base64url>`; the database
 * keeps only their SHA-256 (a leaked database does not leak usable tokens) and an
 * 8-character prefix so users can tell their tokens apart.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { LowrankError } from '@lowrank/crds/errors';
import type { PrismaClient, TokenScope } from '../generated/prisma/client.ts';

export const TOKEN_PREFIX = 'lrk_';
const TOKEN_RE = /^lrk_[A-Za-z0-9_-]{43}$/;

export const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

export function generateToken(): { token: string; prefix: string; hash: string } {
  const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { token, prefix: token.slice(0, 12), hash: hashToken(token) };
}

export interface NewToken {
  userId: string;
  name: string;
  scope: TokenScope;
  /** Restrict the token to one team's repositories. */
  teamId?: string;
  /** Lifetime in days (default 90; 0 = never expires, allowed for admins' automation only). */
  expiresInDays?: number;
}

export async function createToken(
  db: PrismaClient,
  t: NewToken,
): Promise<{ token: string; id: string; prefix: string; expiresAt: Date | null }> {
  if (!t.name || t.name.length > 100) throw new LowrankError('invalid_request', 'token name must be 1 to 100 characters');
  const days = t.expiresInDays ?? 90;
  if (!Number.isInteger(days) || days < 0 || days > 366)
    throw new LowrankError('invalid_request', 'expiresInDays must be an integer from 0 to 366');
  const { token, prefix, hash } = generateToken();
  const expiresAt = days === 0 ? null : new Date(Date.now() + days * 86_400_000);
  const row = await db.apiToken.create({
    data: { userId: t.userId, teamId: t.teamId ?? null, name: t.name, scope: t.scope, prefix, hash, expiresAt },
  });
  return { token, id: row.id, prefix, expiresAt };
}

export function looksLikeToken(token: string): boolean {
  return TOKEN_RE.test(token);
}

/** Constant-time comparison of two hex digests (defence in depth; lookups are by hash). */
export function sameHash(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}
