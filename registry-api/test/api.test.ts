/**
 * The registry over HTTP: push (upload blobs, commit) and pull (versions, files with
 * ETag and Range), conflicts, and a walk of every route of the OpenAPI document with
 * no token, a read token, another team's token and an admin token.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { serviceEnv } from '@lowrank/e2e/env';
import { parse } from 'yaml';
import { createToken } from '../src/auth/tokens.ts';
import { operations } from '../src/openapi/document.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const example = parse(readFileSync(join(import.meta.dirname, '..', '..', 'crds', 'examples', 'adapterjob-train-lora.yaml'), 'utf8'));
const digestOf = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
let reg: TestRegistry;
const tokens: Record<'ada' | 'adaRead' | 'bob' | 'admin', string> = { ada: '', adaRead: '', bob: '', admin: '' };

before(async () => {
  reg = await startRegistry();
  const db = reg.prisma;
  const org = await db.organization.create({ data: { name: 'acme' } });
  const nlp = await db.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const vision = await db.team.create({ data: { name: 'vision', organizationId: org.id } });
  const ada = await db.user.create({ data: { handle: 'ada', memberships: { create: { teamId: nlp.id, role: 'maintainer' } } } });
  const bob = await db.user.create({ data: { handle: 'bob', memberships: { create: { teamId: vision.id, role: 'maintainer' } } } });
  const root = await db.user.create({ data: { handle: 'root', isAdmin: true } });
  tokens.ada = (await createToken(db, { userId: ada.id, name: 'w', scope: 'write' })).token;
  tokens.adaRead = (await createToken(db, { userId: ada.id, name: 'r', scope: 'read' })).token;
  tokens.bob = (await createToken(db, { userId: bob.id, name: 'w', scope: 'admin' })).token;
  tokens.admin = (await createToken(db, { userId: root.id, name: 'a', scope: 'admin' })).token;
});

type Who = keyof typeof tokens | 'anonymous';
function call(who: Who, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const h: Record<string, string> = { ...headers };
  if (who !== 'anonymous') h.authorization = `Bearer ${tokens[who]}`;
  let payload: RequestInit['body'];
  if (body instanceof Uint8Array) {
    h['content-type'] = 'application/octet-stream';
    payload = body as RequestInit['body'];
  } else if (body !== undefined) {
    h['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  return fetch(`${reg.base}${path}`, { method, headers: h, ...(payload === undefined ? {} : { body: payload }) });
}
const json = (r: Response): Promise<any> => r.json();

async function push(who: Who, repo: string, files: Record<string, Uint8Array>, extra: Record<string, unknown> = {}) {
  for (const data of Object.values(files)) {
    const r = await call(who, 'PUT', `/v1/repos/${repo}/blobs/${digestOf(data)}`, data);
    assert.ok(r.status === 201 || r.status === 200, `upload: ${r.status} ${await r.text()}`);
  }
  return call(who, 'POST', `/v1/repos/${repo}/versions`, {
    files: Object.entries(files).map(([path, data]) => ({ path, digest: digestOf(data), size: data.length })),
    config: { peft_type: 'LORA', r: 8, lora_alpha: 16 },
    ...extra,
  });
}

describe('push and pull', () => {
  const model = randomBytes(300_000);
  const config = Buffer.from('{"peft_type":"LORA","r":8}');

  it('creates a repository in a team namespace, once', async () => {
    const r = await call('ada', 'POST', '/v1/repos', {
      namespace: 'nlp',
      name: 'support-bot',
      baseModel: 'meta-llama/Llama-3.2-1B',
      taskTags: ['chat'],
    });
    assert.equal(r.status, 201);
    assert.deepEqual((await json(r)).visibility, 'private');
    assert.equal((await call('ada', 'POST', '/v1/repos', { namespace: 'nlp', name: 'support-bot', baseModel: 'x' })).status, 409);
    const bad = await call('ada', 'POST', '/v1/repos', { namespace: 'NLP', name: 'x', baseModel: 'x', extra: 1 });
    assert.equal(bad.status, 400);
    assert.deepEqual((await json(bad)).errors.map((e: { path: string }) => e.path).sort(), ['body', 'body.namespace']);
    assert.equal((await call('bob', 'POST', '/v1/repos', { namespace: 'nlp', name: 'intrusion', baseModel: 'x' })).status, 403);
    assert.equal((await call('ada', 'POST', '/v1/repos', { namespace: 'nobody', name: 'x', baseModel: 'x' })).status, 404);
  });

  it('pushes a version from uploaded blobs and pulls it back by number and by tag', async () => {
    const r = await push(
      'ada',
      'nlp/support-bot',
      { 'adapter_config.json': config, 'adapter_model.safetensors': model },
      { tags: ['prod'], rank: 8, lineage: [{ relation: 'trained_from', parentRef: 'hf:meta-llama/Llama-3.2-1B' }] },
    );
    assert.equal(r.status, 201, await r.clone().text());
    const v = await json(r);
    assert.equal(v.number, 1);
    assert.deepEqual(v.tags, ['latest', 'prod']);
    assert.deepEqual(v.lineage, [
      { relation: 'trained_from', parent: null, parentRef: 'hf:meta-llama/Llama-3.2-1B', weight: null, parameters: {} },
    ]);
    for (const ref of ['1', 'latest', 'prod']) {
      const got = await json(await call('adaRead', 'GET', `/v1/repos/nlp/support-bot/versions/${ref}`));
      assert.equal(got.number, 1);
    }
    const list = await json(await call('adaRead', 'GET', '/v1/repos/nlp/support-bot/versions'));
    assert.deepEqual(
      list.items.map((x: { number: number }) => x.number),
      [1],
    );
    const repo = await json(await call('adaRead', 'GET', '/v1/repos/nlp/support-bot'));
    assert.deepEqual(repo.tags, { latest: 1, prod: 1 });
  });

  it('serves files with their digest as ETag, If-None-Match and byte ranges', async () => {
    const path = '/v1/repos/nlp/support-bot/versions/latest/files/adapter_model.safetensors';
    const full = await call('adaRead', 'GET', path);
    assert.equal(full.status, 200);
    assert.equal(full.headers.get('etag'), `"${digestOf(model)}"`);
    assert.ok(Buffer.from(await full.arrayBuffer()).equals(model));
    assert.equal((await call('adaRead', 'GET', path, undefined, { 'if-none-match': `"${digestOf(model)}"` })).status, 304);
    const part = await call('adaRead', 'GET', path, undefined, { range: 'bytes=1000-1999' });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 1000-1999/${model.length}`);
    assert.ok(Buffer.from(await part.arrayBuffer()).equals(model.subarray(1000, 2000)));
    const tail = await call('adaRead', 'GET', path, undefined, { range: 'bytes=-10' });
    assert.ok(Buffer.from(await tail.arrayBuffer()).equals(model.subarray(model.length - 10)));
    const out = await call('adaRead', 'GET', path, undefined, { range: `bytes=${model.length}-` });
    assert.equal(out.status, 416);
    assert.equal((await call('adaRead', 'GET', '/v1/repos/nlp/support-bot/versions/1/files/nope.bin')).status, 404);
  });

  it('sends a direct download straight from S3 with a presigned URL, the digest to check in X-Linked-Etag', async () => {
    const path = '/v1/repos/nlp/support-bot/versions/latest/files/adapter_model.safetensors?direct=1';
    const r = await fetch(`${reg.base}${path}`, { headers: { authorization: `Bearer ${tokens.adaRead}` }, redirect: 'manual' });
    assert.equal(r.status, 307);
    assert.equal(r.headers.get('x-linked-etag'), digestOf(model));
    const location = r.headers.get('location') as string;
    assert.ok(location.startsWith(serviceEnv('S3_ENDPOINT')), location);
    assert.match(location, /X-Amz-Signature=/);
    // The URL works without registry credentials, and fetch follows it (dropping the token).
    assert.ok(Buffer.from(await (await fetch(location)).arrayBuffer()).equals(model));
    assert.ok(Buffer.from(await (await call('adaRead', 'GET', path)).arrayBuffer()).equals(model));
    // Authorization still comes first; ranges stay on the registry.
    assert.equal((await call('bob', 'GET', path)).status, 404);
    assert.equal((await call('adaRead', 'GET', path, undefined, { range: 'bytes=0-9' })).status, 206);
  });

  it('serves a version as one tar archive that tar extracts to the same files', async () => {
    const r = await call('adaRead', 'GET', '/v1/repos/nlp/support-bot/versions/1/archive');
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/x-tar');
    assert.match(r.headers.get('content-disposition') ?? '', /nlp-support-bot-v1\.tar/);
    const tarball = Buffer.from(await r.arrayBuffer());
    assert.equal(Number(r.headers.get('content-length')), tarball.length);
    const dir = mkdtempSync(join(tmpdir(), 'archive-'));
    execFileSync('tar', ['-xf', '-', '-C', dir], { input: tarball });
    assert.ok(readFileSync(join(dir, 'adapter_model.safetensors')).equals(model));
    assert.deepEqual(readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    assert.equal((await call('bob', 'GET', '/v1/repos/nlp/support-bot/versions/1/archive')).status, 404);
  });

  it('lets clients leave mid-archive without harm: the next download is whole', async () => {
    // Each client hangs up as soon as the headers arrive, while the pack is between entries;
    // an unhandled stream error here would fail this file (the runner reports it after the test).
    for (let i = 0; i < 20; i++) {
      const ac = new AbortController();
      const r = await fetch(`${reg.base}/v1/repos/nlp/support-bot/versions/1/archive`, {
        headers: { authorization: `Bearer ${tokens.adaRead}` },
        signal: ac.signal,
      });
      assert.equal(r.status, 200);
      ac.abort();
    }
    const r = await call('adaRead', 'GET', '/v1/repos/nlp/support-bot/versions/1/archive');
    assert.equal(Buffer.from(await r.arrayBuffer()).length, Number(r.headers.get('content-length')));
  });

  it('checks method metadata against the schema of its kind', async () => {
    const data = randomBytes(16);
    assert.equal((await call('ada', 'POST', '/v1/repos', { namespace: 'nlp', name: 'meta', baseModel: 'm' })).status, 201);
    const bad = async (methodMetadata: unknown) => {
      const r = await push('ada', 'nlp/meta', { 'x.bin': data }, { methodMetadata });
      assert.equal(r.status, 400, JSON.stringify(methodMetadata));
      return (await json(r)).errors.map((e: { path: string }) => e.path);
    };
    assert.ok(
      (await bad({ kind: 'training', method: 'lora', rank: 8, alpha: 16, targets: ['q_proj'], datasetDigest: digestOf(data) })).includes(
        'body.methodMetadata.lossCurve',
      ),
    );
    assert.ok(
      (
        await bad({
          kind: 'transfer',
          sourceBase: 'a',
          targetBase: 'b',
          syntheticGenerated: 10,
          syntheticKept: 4,
          discriminatorAccuracy: 1.5,
          teacherScore: 1,
          studentScore: 1,
        })
      ).includes('body.methodMetadata.discriminatorAccuracy'),
    );
    assert.ok((await bad({ kind: 'alchemy' })).includes('body.methodMetadata.kind'));
    assert.ok((await bad({ method: 'lora' })).includes('body.methodMetadata.kind'));
    const ok = await push(
      'ada',
      'nlp/meta',
      { 'x.bin': data },
      {
        methodMetadata: { kind: 'merge', method: 'ties', inputs: ['nlp/a@1', 'nlp/b@2'], weights: [0.5, 0.5], density: 0.4, note: 'kept' },
      },
    );
    assert.equal(ok.status, 201, await ok.clone().text());
    assert.equal((await json(ok)).methodMetadata.note, 'kept');
  });

  it('skips uploads of blobs the repository already has', async () => {
    assert.equal((await call('ada', 'HEAD', `/v1/repos/nlp/support-bot/blobs/${digestOf(model)}`)).status, 200);
    assert.equal((await call('ada', 'HEAD', `/v1/repos/nlp/support-bot/blobs/${digestOf(randomBytes(5))}`)).status, 404);
  });

  it('refuses bytes that do not match their digest, and commits that name missing blobs', async () => {
    const data = randomBytes(100);
    const r = await call('ada', 'PUT', `/v1/repos/nlp/support-bot/blobs/${digestOf(randomBytes(100))}`, data);
    assert.equal(r.status, 422);
    assert.match((await json(r)).detail, /hashes to sha256:.* not sha256:/);
    const c = await call('ada', 'POST', '/v1/repos/nlp/support-bot/versions', {
      files: [{ path: 'a.bin', digest: digestOf(data), size: 100 }],
      config: {},
    });
    assert.equal(c.status, 400);
    assert.match(JSON.stringify(await json(c)), /was not uploaded; upload it/);
  });

  it('gives one of two concurrent pushes of the same number a conflict', async () => {
    const [a, b] = await Promise.all([
      push('ada', 'nlp/support-bot', { 'adapter_model.safetensors': randomBytes(1000) }, { number: 2 }),
      push('ada', 'nlp/support-bot', { 'adapter_model.safetensors': randomBytes(1000) }, { number: 2 }),
    ]);
    assert.deepEqual([a.status, b.status].sort(), [201, 409], `${await a.clone().text()} ${await b.clone().text()}`);
  });

  it('warns when a pushed rank is above common serving limits, with a valid CompressionJob to fix it', async () => {
    const low = await push('ada', 'nlp/support-bot', { 'adapter_model.safetensors': randomBytes(50) });
    assert.equal((await json(low)).warnings, undefined, 'r = 8 needs no advice');
    const high = await push(
      'ada',
      'nlp/support-bot',
      { 'adapter_model.safetensors': randomBytes(50) },
      { config: { peft_type: 'LORA', r: 16, rank_pattern: { 'layers.0.q_proj': 64 } } },
    );
    const v = await json(high);
    assert.equal(v.warnings[0].code, 'rank_above_serving_default');
    assert.match(v.warnings[0].message, /rank 64 is above vLLM's default --max-lora-rank 16/);
    const check = await json(await call('ada', 'POST', '/v1/jobs:validate', v.warnings[0].suggestedJob));
    assert.equal(check.valid, true, JSON.stringify(check));
    assert.equal(check.resource.spec.servingMaxRank, 16);
  });

  it('records lineage to other versions the caller can read', async () => {
    const r = await push(
      'ada',
      'nlp/support-bot',
      { 'adapter_model.safetensors': randomBytes(500) },
      { lineage: [{ relation: 'compressed_from', parent: 'nlp/support-bot@1', parameters: { energy: 0.95 } }] },
    );
    assert.equal(r.status, 201);
    assert.equal((await json(r)).lineage[0].parent, 'nlp/support-bot@1');
    // Another team cannot name (or probe) a private version as a parent.
    assert.equal((await call('bob', 'POST', '/v1/repos', { namespace: 'vision', name: 'probe', baseModel: 'm' })).status, 201);
    const hidden = await push(
      'bob',
      'vision/probe',
      { 'x.bin': randomBytes(10) },
      { lineage: [{ relation: 'merged_from', parent: 'nlp/support-bot@1', weight: 0.5 }] },
    );
    assert.equal(hidden.status, 400);
    assert.match(JSON.stringify(await json(hidden)), /version nlp\/support-bot@1 not found/);
  });

  it('lets anyone read a public repository, and nobody else write to it', async () => {
    assert.equal(
      (await call('ada', 'POST', '/v1/repos', { namespace: 'nlp', name: 'open', baseModel: 'm', visibility: 'public' })).status,
      201,
    );
    assert.equal((await push('ada', 'nlp/open', { 'adapter_model.safetensors': Buffer.from('public bytes') })).status, 201);
    const anon = await call('anonymous', 'GET', '/v1/repos/nlp/open/versions/latest/files/adapter_model.safetensors');
    assert.equal(await anon.text(), 'public bytes');
    assert.equal((await call('bob', 'PUT', `/v1/repos/nlp/open/blobs/${digestOf(Buffer.from('x'))}`, Buffer.from('x'))).status, 403);
    assert.equal((await call('anonymous', 'PUT', `/v1/repos/nlp/open/blobs/${digestOf(Buffer.from('x'))}`, Buffer.from('x'))).status, 401);
  });
});

describe('tags and yanking', () => {
  it('moves tags, keeps latest, and yanks a version without breaking its lineage', async () => {
    assert.equal((await call('ada', 'POST', '/v1/repos', { namespace: 'nlp', name: 'tagged', baseModel: 'm' })).status, 201);
    for (let i = 0; i < 3; i++)
      assert.equal((await push('ada', 'nlp/tagged', { 'adapter_model.safetensors': randomBytes(40) })).status, 201);
    assert.deepEqual(await json(await call('ada', 'PUT', '/v1/repos/nlp/tagged/tags/prod', { version: 2 })), { tag: 'prod', version: 2 });
    assert.deepEqual(await json(await call('ada', 'PUT', '/v1/repos/nlp/tagged/tags/canary', { version: 'latest' })), {
      tag: 'canary',
      version: 3,
    });
    assert.equal((await call('ada', 'PUT', '/v1/repos/nlp/tagged/tags/42', { version: 1 })).status, 400);
    assert.equal((await call('ada', 'DELETE', '/v1/repos/nlp/tagged/tags/latest')).status, 400);
    // Yanking needs admin rights on the repository: a maintainer with an admin-scoped token.
    assert.equal((await call('ada', 'POST', '/v1/repos/nlp/tagged/versions/3:yank', { reason: 'trained on eval data' })).status, 403);
    const y = await call('admin', 'POST', '/v1/repos/nlp/tagged/versions/3:yank', { reason: 'trained on eval data' });
    assert.equal(y.status, 200, await y.clone().text());
    assert.equal((await json(y)).yanked.reason, 'trained on eval data');
    const repo = await json(await call('ada', 'GET', '/v1/repos/nlp/tagged'));
    assert.deepEqual(repo.tags, { latest: 2, prod: 2 }, 'latest fell back, canary was removed');
    assert.equal((await json(await call('ada', 'GET', '/v1/repos/nlp/tagged/versions/3'))).yanked.reason, 'trained on eval data');
    assert.equal((await call('ada', 'PUT', '/v1/repos/nlp/tagged/tags/prod', { version: 3 })).status, 409);
    assert.equal((await call('admin', 'POST', '/v1/repos/nlp/tagged/versions/3:yank', { reason: 'again' })).status, 409);
    assert.equal((await call('ada', 'DELETE', '/v1/repos/nlp/tagged/tags/prod')).status, 204);
    assert.equal((await call('ada', 'DELETE', '/v1/repos/nlp/tagged/tags/prod')).status, 404);
    assert.equal((await call('ada', 'POST', '/v1/jobsfoo')).status, 404, 'custom methods are literal');
  });
});

describe('search', () => {
  it('finds repositories by text and filters, only among those the caller may read', async () => {
    const mk = async (name: string, visibility: string, description: string, taskTags: string[], rank: number, method: string) => {
      assert.equal(
        (
          await call('ada', 'POST', '/v1/repos', {
            namespace: 'nlp',
            name,
            baseModel: 'Qwen/Qwen2-0.5B',
            visibility,
            description,
            taskTags,
          })
        ).status,
        201,
      );
      assert.equal((await push('ada', `nlp/${name}`, { 'adapter_model.safetensors': randomBytes(32) }, { rank, method })).status, 201);
    };
    await mk('legal-summarizer', 'internal', 'Summarises contracts and court rulings', ['summarization', 'legal'], 16, 'dora');
    await mk('legal-private', 'private', 'Internal legal drafts', ['legal'], 8, 'lora');
    await mk('chat-helper', 'public', 'Friendly chat about contracts', ['chat'], 64, 'rslora');
    const find = async (who: Who, query: string) =>
      (await json(await call(who, 'GET', `/v1/repos?${query}`))).items.map((r: { name: string }) => r.name);
    assert.deepEqual((await find('ada', 'q=legal&baseModel=Qwen/Qwen2-0.5B')).sort(), ['legal-private', 'legal-summarizer']);
    assert.deepEqual(await find('bob', 'q=legal&baseModel=Qwen/Qwen2-0.5B'), ['legal-summarizer']);
    assert.deepEqual(await find('anonymous', 'q=contracts'), ['chat-helper']);
    assert.deepEqual(await find('ada', 'q=contracts&tag=legal'), ['legal-summarizer']);
    assert.deepEqual(await find('ada', 'baseModel=Qwen/Qwen2-0.5B&method=rslora'), ['chat-helper']);
    assert.deepEqual(await find('ada', 'baseModel=Qwen/Qwen2-0.5B&rank=8'), ['legal-private']);
    assert.deepEqual(await find('ada', 'q=legal -private'), ['legal-summarizer']);
    const page = await json(await call('ada', 'GET', '/v1/repos?baseModel=Qwen/Qwen2-0.5B&limit=2'));
    assert.equal(page.total, 3);
    assert.equal(page.items.length, 2);
    assert.equal((await call('ada', 'GET', '/v1/repos?limit=1000')).status, 400);
    assert.equal((await call('ada', 'GET', '/v1/repos?color=blue')).status, 400);
  });
});

describe('lineage', () => {
  it('answers ancestors and descendants to a depth, hiding versions the caller cannot read', async () => {
    for (const [ns, name, visibility] of [
      ['nlp', 'base-a', 'internal'],
      ['nlp', 'base-b', 'private'],
      ['nlp', 'merged', 'internal'],
      ['nlp', 'small', 'internal'],
    ] as const) {
      assert.equal((await call('ada', 'POST', '/v1/repos', { namespace: ns, name, baseModel: 'm', visibility })).status, 201);
    }
    const one = async (repo: string, lineage: unknown[] = []) => {
      const r = await push('ada', repo, { 'adapter_model.safetensors': randomBytes(64) }, { lineage });
      assert.equal(r.status, 201, await r.clone().text());
      return (await json(r)).number as number;
    };
    await one('nlp/base-a', [{ relation: 'trained_from', parentRef: 'hf:meta-llama/Llama-3.2-1B' }]);
    await one('nlp/base-b');
    await one('nlp/merged', [
      { relation: 'merged_from', parent: 'nlp/base-a@1', weight: 0.7 },
      { relation: 'merged_from', parent: 'nlp/base-b@1', weight: 0.3 },
    ]);
    await one('nlp/small', [{ relation: 'compressed_from', parent: 'nlp/merged@1', parameters: { rank: 4 } }]);

    const up = await json(await call('ada', 'GET', '/v1/repos/nlp/small/versions/1/lineage?direction=ancestors&depth=2'));
    const names = (g: { nodes: { version: string | null; depth: number }[] }) => g.nodes.map((n) => `${n.depth}:${n.version}`);
    assert.deepEqual(names(up), ['0:nlp/small@1', '1:nlp/merged@1', '2:nlp/base-a@1', '2:nlp/base-b@1']);
    assert.deepEqual(up.edges.map((e: { relation: string; weight: number | null }) => `${e.relation}:${e.weight}`).sort(), [
      'compressed_from:null',
      'merged_from:0.3',
      'merged_from:0.7',
    ]);
    const deeper = await json(await call('ada', 'GET', '/v1/repos/nlp/small/versions/1/lineage?direction=ancestors&depth=3'));
    assert.ok(deeper.edges.some((e: { parentRef: string | null }) => e.parentRef === 'hf:meta-llama/Llama-3.2-1B'));
    const down = await json(await call('ada', 'GET', '/v1/repos/nlp/base-a/versions/1/lineage?direction=descendants'));
    assert.deepEqual(names(down), ['0:nlp/base-a@1', '1:nlp/merged@1', '2:nlp/small@1']);
    // bob reads the internal chain but not the private parent.
    const seenByBob = await json(await call('bob', 'GET', '/v1/repos/nlp/small/versions/1/lineage?direction=ancestors'));
    assert.deepEqual(
      seenByBob.nodes.filter((n: { hidden: boolean }) => n.hidden).map((n: { version: string | null }) => n.version),
      [null],
    );
    assert.equal((await call('ada', 'GET', '/v1/repos/nlp/small/versions/1/lineage?depth=0')).status, 400);
  });
});

describe('every route checks authorization', () => {
  const callers: Who[] = ['anonymous', 'adaRead', 'bob', 'admin'];
  const file = Buffer.from('route walk');
  /** What each kind of route answers each caller, on a private repository of team nlp. */
  const expected: Record<string, Record<Who, 'ok' | number>> = {
    none: { anonymous: 'ok', adaRead: 'ok', bob: 'ok', admin: 'ok', ada: 'ok' },
    user: { anonymous: 401, adaRead: 'ok', bob: 'ok', admin: 'ok', ada: 'ok' },
    read: { anonymous: 401, adaRead: 'ok', bob: 404, admin: 'ok', ada: 'ok' },
    write: { anonymous: 401, adaRead: 403, bob: 404, admin: 'ok', ada: 'ok' },
  };

  const jobIds: Record<'read' | 'cancel' | 'progress' | 'ckpt', string> = { read: '', cancel: '', progress: '', ckpt: '' };
  const uploads: Record<'get' | 'abort' | 'parts' | 'complete', string> = { get: '', abort: '', parts: '', complete: '' };
  let partsDigest = '';
  const job = () => ({ ...example, spec: { ...example.spec, output: { repository: 'nlp/walk' } } });

  before(async () => {
    await call('ada', 'POST', '/v1/repos', { namespace: 'nlp', name: 'walk', baseModel: 'm' });
    assert.equal((await push('ada', 'nlp/walk', { 'adapter_config.json': file })).status, 201);
    for (const k of Object.keys(uploads) as (keyof typeof uploads)[]) {
      const data = randomBytes(32);
      const r = await call('ada', 'POST', '/v1/repos/nlp/walk/uploads', { digest: digestOf(data), size: 32 });
      assert.equal(r.status, 201, await r.clone().text());
      uploads[k] = (await json(r)).location;
      if (k === 'parts') partsDigest = createHash('sha256').update(data).digest('base64'); // one request: part 1 is the blob
    }
    for (const k of Object.keys(jobIds) as (keyof typeof jobIds)[]) {
      const r = await call('ada', 'POST', '/v1/jobs', job());
      assert.equal(r.status, 201, await r.clone().text());
      jobIds[k] = (await json(r)).id;
    }
    const up = await call('ada', 'PUT', `/v1/jobs/${jobIds.ckpt}/checkpoints/blobs/${digestOf(file)}`, file);
    assert.ok(up.status === 201 || up.status === 200, `checkpoint blob: ${up.status}`);
    const saved = await call('ada', 'POST', `/v1/jobs/${jobIds.ckpt}/checkpoints`, {
      step: 5,
      files: [{ path: 'state.bin', digest: digestOf(file), size: file.length }],
    });
    assert.equal(saved.status, 201, await saved.clone().text());
  });

  function request(operationId: string): { path: string; body?: unknown } {
    const d = digestOf(file);
    const table: Record<string, { path: string; body?: unknown }> = {
      getHealth: { path: '/healthz' },
      getReadiness: { path: '/readyz' },
      getOpenApi: { path: '/v1/openapi.json' },
      listJobSchemas: { path: '/v1/schemas' },
      getJobSchema: { path: '/v1/schemas/AdapterJob' },
      validateJob: { path: '/v1/jobs:validate', body: { kind: 'AdapterMerge', spec: {} } },
      getMe: { path: '/v1/me' },
      listJobs: { path: '/v1/jobs' },
      submitJob: { path: '/v1/jobs', body: job() },
      getJob: { path: `/v1/jobs/${jobIds.read}` },
      jobEvents: { path: `/v1/jobs/${jobIds.read}/events` },
      cancelJob: { path: `/v1/jobs/${jobIds.cancel}:cancel` },
      reportJobProgress: { path: `/v1/jobs/${jobIds.progress}/progress`, body: { status: 'running', progress: { step: 1, total: 10 } } },
      startUpload: { path: '/v1/repos/nlp/walk/uploads', body: { digest: digestOf(randomBytes(32)), size: 32 } },
      getUpload: { path: uploads.get },
      abortUpload: { path: uploads.abort },
      presignUploadParts: {
        path: `${uploads.parts}/parts`,
        body: { parts: [{ number: 1, sha256: partsDigest }] },
      },
      completeUpload: { path: `${uploads.complete}:complete` },
      downloadArchive: { path: '/v1/repos/nlp/walk/versions/1/archive' },
      getDiagnostics: { path: '/v1/repos/nlp/walk/versions/1/diagnostics' },
      compareVersions: { path: '/v1/repos/nlp/walk/versions/1/compare?with=nlp/walk@1' },
      getJobLogs: { path: `/v1/jobs/${jobIds.read}/logs?since=0` },
      appendJobLogs: { path: `/v1/jobs/${jobIds.progress}/logs`, body: { lines: [{ stream: 'stdout', text: 'hello' }] } },
      listJobCheckpoints: { path: `/v1/jobs/${jobIds.ckpt}/checkpoints` },
      saveJobCheckpoint: {
        path: `/v1/jobs/${jobIds.ckpt}/checkpoints`,
        body: { step: 7, files: [{ path: 'state.bin', digest: d, size: file.length }] },
      },
      uploadCheckpointBlob: { path: `/v1/jobs/${jobIds.ckpt}/checkpoints/blobs/${d}`, body: file },
      downloadCheckpointFile: { path: `/v1/jobs/${jobIds.ckpt}/checkpoints/5/files/state.bin` },
      createRepository: { path: '/v1/repos', body: { namespace: 'nlp', name: `walk-${randomBytes(3).toString('hex')}`, baseModel: 'm' } },
      getRepository: { path: '/v1/repos/nlp/walk' },
      searchRepositories: { path: '/v1/repos?q=walk' },
      headBlob: { path: `/v1/repos/nlp/walk/blobs/${d}` },
      uploadBlob: { path: `/v1/repos/nlp/walk/blobs/${d}`, body: file },
      listVersions: { path: '/v1/repos/nlp/walk/versions' },
      commitVersion: {
        path: '/v1/repos/nlp/walk/versions',
        body: { files: [{ path: 'adapter_config.json', digest: d, size: file.length }], config: {} },
      },
      getVersion: { path: '/v1/repos/nlp/walk/versions/latest' },
      downloadFile: { path: '/v1/repos/nlp/walk/versions/1/files/adapter_config.json' },
      getLineage: { path: '/v1/repos/nlp/walk/versions/1/lineage?depth=3' },
      setTag: { path: '/v1/repos/nlp/walk/tags/stable', body: { version: 1 } },
      deleteTag: { path: '/v1/repos/nlp/walk/tags/stable' },
      yankVersion: { path: '/v1/repos/nlp/walk/versions/1:yank', body: { reason: 'route walk' } },
      hubModelInfo: { path: '/api/models/nlp/walk' },
      hubModelInfoAtRevision: { path: '/api/models/nlp/walk/revision/1' },
      hubTree: { path: '/api/models/nlp/walk/tree/main?recursive=True' },
      hubTreeAtPath: { path: '/api/models/nlp/walk/tree/main/adapter_config.json' },
      hubResolve: { path: '/nlp/walk/resolve/main/adapter_config.json' },
      hubResolveHead: { path: '/nlp/walk/resolve/main/adapter_config.json' },
    };
    const r = table[operationId];
    if (!r) throw new Error(`the route walk has no request for ${operationId}: add one`);
    return r;
  }

  for (const op of operations()) {
    it(`${op.method.toUpperCase()} ${op.path} (${op.operationId}, ${op.auth})`, async () => {
      const { path, body } = request(op.operationId);
      const want = expected[op.auth === 'admin' || op.auth === 'site' ? 'write' : op.auth];
      assert.ok(want, `no expectation for auth ${op.auth}`);
      for (const who of callers) {
        const r = await call(who, op.method.toUpperCase(), path, body);
        // createRepository and submitJob name a team, not a repository: other teams are refused, not hidden.
        const namesTeam = op.operationId === 'createRepository' || op.operationId === 'submitJob';
        const expStatus: 'ok' | number = namesTeam && who === 'bob' ? 403 : want[who];
        const ok = expStatus === 'ok' ? r.status < 400 || r.status === 422 : r.status === expStatus;
        // Read the body only to explain a failure: event streams stay open until their job ends.
        if (!ok) assert.fail(`${who}: expected ${expStatus}, got ${r.status} ${await r.text()}`);
        await r.body?.cancel();
      }
    });
  }
});
