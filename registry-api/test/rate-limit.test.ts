/**
 * Rate limits on a real registry and Redis: a token past its budget gets 429 problem+json
 * (code rate_limited) with Retry-After and RateLimit headers, other tokens and health
 * checks are unaffected, anonymous callers have their own (smaller) budget, and two
 * registry replicas on one Redis share a budget.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import { createToken } from '../src/auth/tokens.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const limits = { windowMs: 60_000, perToken: 5, anonymous: 2 };
let a: TestRegistry;
let b: TestRegistry;
const tok = { one: '', two: '' };

before(async () => {
  // Its own Redis database: the counters are not shared with other test files.
  const url = `${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/10`;
  const redis = new Redis(url);
  await redis.flushdb();
  a = await startRegistry({ redis, rateLimit: limits });
  // A second replica: the budget lives in Redis, so an app on the same Redis database.
  b = await startRegistry({ redis: new Redis(url), rateLimit: limits });
  const user = await a.prisma.user.create({ data: { handle: 'ada' } });
  tok.one = (await createToken(a.prisma, { userId: user.id, name: 'one', scope: 'read' })).token;
  tok.two = (await createToken(a.prisma, { userId: user.id, name: 'two', scope: 'read' })).token;
});

const me = (base: string, token?: string) => fetch(`${base}/v1/me`, token ? { headers: { authorization: `Bearer ${token}` } } : {});

describe('rate limits', () => {
  it('refuses a token past its budget with 429, Retry-After and what to do', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await me(a.base, tok.one)).status, 200);
    const r = await me(a.base, tok.one);
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    assert.ok(Number(r.headers.get('retry-after')) > 0);
    assert.match(r.headers.get('ratelimit-policy') ?? '', /q=5/);
    const p = (await r.json()) as { code: string; detail: string };
    assert.equal(p.code, 'rate_limited');
    assert.match(p.detail, /this token may make 5 per 60 s; retry after \d+ s/);
    assert.equal((await me(a.base, tok.two)).status, 200, 'another token has its own budget');
    assert.equal((await fetch(`${a.base}/healthz`)).status, 200, 'health checks are never limited');
  });

  it('gives anonymous callers their own smaller budget', async () => {
    assert.equal((await fetch(`${a.base}/v1/schemas`)).status, 200);
    assert.equal((await fetch(`${a.base}/v1/schemas`)).status, 200);
    assert.equal((await fetch(`${a.base}/v1/schemas`)).status, 429);
  });

  it('shares a budget across replicas through Redis', async () => {
    // This address spent its anonymous budget on replica a; b counts in the same Redis.
    assert.equal((await fetch(`${b.base}/v1/schemas`)).status, 429);
  });
});
