/** Tokens against the real database, and the authorization policy as a table. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LowrankError } from '@lowrank/crds/errors';
import { type Action, decide, type Target } from '../src/auth/policy.ts';
import { authenticate, type Principal } from '../src/auth/principal.ts';
import { createToken, hashToken } from '../src/auth/tokens.ts';
import type { PrismaClient } from '../src/generated/prisma/client.ts';
import { migratedPrisma } from './support/database.ts';

const unauthorized = (re: RegExp) => (e: unknown) => e instanceof LowrankError && e.code === 'unauthorized' && re.test(e.message);

describe('tokens', () => {
  let db: PrismaClient;
  let userId: string;
  let teamId: string;
  before(async () => {
    ({ prisma: db } = await migratedPrisma());
    const org = await db.organization.create({ data: { name: 'acme' } });
    teamId = (await db.team.create({ data: { name: 'nlp', organizationId: org.id } })).id;
    userId = (await db.user.create({ data: { handle: 'ada', memberships: { create: { teamId, role: 'maintainer' } } } })).id;
  });
  after(() => db.$disconnect());

  it('are shown once and stored only as their SHA-256', async () => {
    const t = await createToken(db, { userId, name: 'laptop', scope: 'write' });
    assert.match(t.token, /^lrk_[A-Za-z0-9_-]{43}$/);
    const row = await db.apiToken.findUniqueOrThrow({ where: { id: t.id } });
    assert.equal(row.hash, hashToken(t.token));
    assert.ok(!JSON.stringify(row).includes(t.token.slice(4)), 'the token itself is not stored');
    assert.equal(row.prefix, t.token.slice(0, 12));
    assert.ok(row.expiresAt && row.expiresAt.getTime() > Date.now() + 89 * 86_400_000, 'expires in 90 days by default');
  });

  it('authenticate the caller with their memberships, and record last use', async () => {
    const t = await createToken(db, { userId, name: 'ci', scope: 'read', teamId });
    const p = (await authenticate(db, `Bearer ${t.token}`)) as Principal;
    assert.equal(p.handle, 'ada');
    assert.equal(p.scope, 'read');
    assert.equal(p.tokenTeamId, teamId);
    assert.equal(p.teams.get(teamId), 'maintainer');
    assert.ok((await db.apiToken.findUniqueOrThrow({ where: { id: t.id } })).lastUsedAt);
    assert.equal(await authenticate(db, undefined), null);
  });

  it('refuse malformed, unknown, revoked and expired tokens, saying what to do', async () => {
    await assert.rejects(authenticate(db, 'Basic abc'), unauthorized(/Authorization: Bearer/));
    await assert.rejects(authenticate(db, 'Bearer hf_abc'), unauthorized(/start with lrk_/));
    await assert.rejects(authenticate(db, `Bearer lrk_${'A'.repeat(43)}`), unauthorized(/unknown token/));
    const revoked = await createToken(db, { userId, name: 'old', scope: 'write' });
    await db.apiToken.update({ where: { id: revoked.id }, data: { revokedAt: new Date() } });
    await assert.rejects(authenticate(db, `Bearer ${revoked.token}`), unauthorized(/was revoked/));
    const expired = await createToken(db, { userId, name: 'short', scope: 'write' });
    await db.apiToken.update({ where: { id: expired.id }, data: { expiresAt: new Date(Date.now() - 1000) } });
    await assert.rejects(authenticate(db, `Bearer ${expired.token}`), unauthorized(/expired on/));
  });

  it('validate their parameters', async () => {
    await assert.rejects(createToken(db, { userId, name: '', scope: 'read' }), /token name/);
    await assert.rejects(createToken(db, { userId, name: 'x', scope: 'read', expiresInDays: 1000 }), /expiresInDays/);
  });
});

describe('policy', () => {
  const team = 'team-a';
  const other = 'team-b';
  const who = (over: Partial<Principal>): Principal => ({
    userId: 'u',
    handle: 'u',
    isAdmin: false,
    tokenId: 't',
    scope: 'write',
    tokenTeamId: null,
    teams: new Map(),
    ...over,
  });
  const callers: Record<string, Principal | null> = {
    anonymous: null,
    outsiderRead: who({ scope: 'read' }),
    memberRead: who({ scope: 'read', teams: new Map([[team, 'member']]) }),
    memberWrite: who({ teams: new Map([[team, 'member']]) }),
    maintainerWrite: who({ teams: new Map([[team, 'maintainer']]) }),
    maintainerAdmin: who({ scope: 'admin', teams: new Map([[team, 'maintainer']]) }),
    otherTeamToken: who({
      scope: 'admin',
      tokenTeamId: other,
      teams: new Map([
        [team, 'maintainer'],
        [other, 'maintainer'],
      ]),
    }),
    siteAdmin: who({ scope: 'admin', isAdmin: true }),
    siteAdminReadToken: who({ scope: 'read', isAdmin: true }),
  };
  const repo = (visibility: Target['visibility']): Target => ({ teamId: team, visibility });
  // caller -> [read public, read internal, read private, write internal, write private, admin private, site]
  const table: Record<string, (200 | 401 | 403 | 404)[]> = {
    anonymous: [200, 401, 401, 401, 401, 401, 401],
    outsiderRead: [200, 200, 404, 403, 403, 403, 403],
    memberRead: [200, 200, 200, 403, 403, 403, 403],
    memberWrite: [200, 200, 200, 200, 200, 403, 403],
    maintainerWrite: [200, 200, 200, 200, 200, 403, 403],
    maintainerAdmin: [200, 200, 200, 200, 200, 200, 403],
    otherTeamToken: [200, 200, 404, 403, 404, 404, 403],
    siteAdmin: [200, 200, 200, 200, 200, 200, 200],
    siteAdminReadToken: [200, 200, 404, 403, 403, 403, 403],
  };
  const columns: [Action, Target | undefined][] = [
    ['read', repo('public')],
    ['read', repo('internal')],
    ['read', repo('private')],
    ['write', repo('internal')],
    ['write', repo('private')],
    ['admin', repo('private')],
    ['site', undefined],
  ];
  for (const [name, expected] of Object.entries(table)) {
    it(`${name}: ${expected.join(' ')}`, () => {
      const got = columns.map(([action, target]) => {
        const d = decide(callers[name] ?? null, action, target);
        return d.allowed ? 200 : d.status;
      });
      assert.deepEqual(got, expected);
    });
  }
});
