/**
 * Post-processing on bull, against real PostgreSQL, Redis and MinIO: each committed
 * version gets diagnostics computed by the native core (spectra equal to the core's own
 * for the same factors; a non-adapter version says so), two versions compare side by
 * side with both spectra, and the scheduled garbage collection deletes an abandoned
 * upload's bytes from S3.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import { spectra } from '../../worker/src/native/linalg.ts';
import { readPeftAdapter, writePeftAdapter } from '../../worker/src/peft/adapter-dir.ts';
import { lcg, randomModule } from '../../worker/test/support/random-adapter.ts';
import { createToken } from '../src/auth/tokens.ts';
import { RegistryClient } from '../src/cli/client.ts';
import { push } from '../src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-postprocess-'));
let reg: TestRegistry;
let client: RegistryClient;
let other: RegistryClient;

function adapter(dir: string, seed: number, r: number): void {
  const rnd = lcg(seed);
  writePeftAdapter(dir, {
    'model.layers.0.self_attn.q_proj': randomModule(rnd, 24, 16, r),
    'model.layers.1.mlp.down_proj': randomModule(rnd, 16, 40, r),
  });
}

async function ready(ref: string): Promise<any> {
  const end = Date.now() + 60_000;
  for (;;) {
    const d = await client.json<any>('GET', `/v1/repos/${ref.replace('@', '/versions/')}/diagnostics`);
    if (d.state === 'ready') return d;
    if (Date.now() > end) assert.fail(`diagnostics of ${ref} never computed`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(async () => {
  // Own Redis database: this file's post-processing worker must not take other files' tasks.
  const redis = new Redis(`${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/9`);
  await redis.flushdb();
  reg = await startRegistry({ redis, postprocess: true });
  const org = await reg.prisma.organization.create({ data: { name: 'acme' } });
  const nlp = await reg.prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const vision = await reg.prisma.team.create({ data: { name: 'vision', organizationId: org.id } });
  const ada = await reg.prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: nlp.id } } } });
  const bob = await reg.prisma.user.create({ data: { handle: 'bob', memberships: { create: { teamId: vision.id } } } });
  client = new RegistryClient({
    registry: reg.base,
    token: (await createToken(reg.prisma, { userId: ada.id, name: 't', scope: 'write' })).token,
  });
  other = new RegistryClient({
    registry: reg.base,
    token: (await createToken(reg.prisma, { userId: bob.id, name: 't', scope: 'write' })).token,
  });
  await client.json('POST', '/v1/repos', { namespace: 'nlp', name: 'bot', baseModel: 'tiny' });
  await other.json('POST', '/v1/repos', { namespace: 'vision', name: 'secret', baseModel: 'tiny' });
  adapter(join(tmp, 'v1'), 1, 8);
  adapter(join(tmp, 'v2'), 2, 4);
  await push(client, join(tmp, 'v1'), 'nlp/bot');
  await push(client, join(tmp, 'v2'), 'nlp/bot');
});

describe('diagnostics after each commit', () => {
  it('computes every module spectrum with the native core', async () => {
    const d = await ready('nlp/bot@1');
    assert.equal(d.kind, 'lora');
    assert.deepEqual(Object.keys(d.modules).sort(), ['model.layers.0.self_attn.q_proj', 'model.layers.1.mlp.down_proj']);
    const local = readPeftAdapter(join(tmp, 'v1'));
    for (const [name, m] of Object.entries(local.modules)) {
      const want = spectra(m);
      const got = d.modules[name];
      assert.equal(got.sigma.length, 8);
      for (const [i, x] of (got.sigma as number[]).entries()) {
        assert.ok(Math.abs(x - (want.sigma[i] as number)) <= 1e-6 * (want.sigma[0] as number) + 1e-6, `${name} sigma[${i}]`);
      }
      assert.ok(Math.abs(got.erank - want.erank) <= 1e-5);
      assert.deepEqual(got.kAt, want.kAt);
    }
    assert.equal(d.summary.modules, 2);
    assert.equal(d.summary.params, 8 * (24 + 16) + 8 * (16 + 40));
  });

  it('says when a version is not a LoRA adapter', async () => {
    const dir = join(tmp, 'notes');
    (await import('node:fs')).mkdirSync(dir);
    (await import('node:fs')).writeFileSync(join(dir, 'README.md'), '# notes\n');
    const { number } = await push(client, dir, 'nlp/bot');
    const d = await ready(`nlp/bot@${number}`);
    assert.equal(d.kind, 'none');
    assert.match(d.reason, /not a PEFT LoRA adapter/);
  });
});

describe('compare two versions', () => {
  it('shows config and file differences and both spectra', async () => {
    await ready('nlp/bot@2');
    const c = await client.json<any>('GET', '/v1/repos/nlp/bot/versions/1/compare?with=nlp/bot@2');
    assert.equal(c.a.number, 1);
    assert.equal(c.b.number, 2);
    assert.deepEqual(
      c.config.find((d: any) => d.key === 'r'),
      { key: 'r', a: 8, b: 4 },
    );
    assert.deepEqual(c.files.changed.sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const q = c.spectra['model.layers.0.self_attn.q_proj'];
    assert.equal(q.a.length, 8);
    assert.equal(q.b.length, 4);
  });

  it('refuses what the caller may not read, and a malformed reference', async () => {
    await assert.rejects(client.json('GET', '/v1/repos/nlp/bot/versions/1/compare?with=vision/secret@1'), /not found/);
    await assert.rejects(client.json('GET', '/v1/repos/nlp/bot/versions/1/compare?with=nlp/bot'), (err: { errors: { path: string }[] }) =>
      err.errors.some((e) => e.path === 'query.with'),
    );
    await assert.rejects(client.json('GET', '/v1/repos/nlp/bot/versions/1/compare?with=nlp/bot@77'), /has no version 77/);
  });
});

describe('scheduled garbage collection', () => {
  it("deletes an abandoned upload's bytes from S3 once its grace period passed", async () => {
    const bytes = randomBytes(4096);
    const digest = `sha256:${(await import('node:crypto')).createHash('sha256').update(bytes).digest('hex')}`;
    await client.request('PUT', `/v1/repos/nlp/bot/blobs/${digest}`, {
      raw: bytes,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) },
    });
    assert.deepEqual(await reg.blobs.stat(digest), { size: 4096 });
    assert.ok(reg.postprocess);
    await reg.postprocess.scheduleGc(500, 0);
    const end = Date.now() + 30_000;
    while ((await reg.blobs.stat(digest)) !== undefined) {
      if (Date.now() > end) assert.fail('GC never deleted the abandoned blob');
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(await reg.prisma.blob.count({ where: { digest } }), 0);
    // Committed blobs stay.
    const kept = (await reg.prisma.versionFile.findMany({ select: { blobDigest: true } })).map((f) => f.blobDigest);
    for (const d of kept) assert.ok(await reg.blobs.stat(d), `${d} is referenced and must stay`);
  });
});
