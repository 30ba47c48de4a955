/**
 * Job checkpoints: stored by digest and counted like version files, so garbage
 * collection keeps them while the job runs; only the newest `keep` stay; they are
 * released when the job ends (succeeded, failed or cancelled), after which writing is
 * refused; bad records are refused with what to fix.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { createToken } from '../src/auth/tokens.ts';
import { collectGarbage } from '../src/versions/blobs.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const example = parse(readFileSync(join(import.meta.dirname, '..', '..', 'crds', 'examples', 'adapterjob-train-lora.yaml'), 'utf8'));
const digestOf = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
let reg: TestRegistry;
let ada = '';
let bob = '';

before(async () => {
  reg = await startRegistry();
  const db = reg.prisma;
  const org = await db.organization.create({ data: { name: 'acme' } });
  const nlp = await db.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const vision = await db.team.create({ data: { name: 'vision', organizationId: org.id } });
  const u = await db.user.create({ data: { handle: 'ada', memberships: { create: { teamId: nlp.id, role: 'maintainer' } } } });
  const b = await db.user.create({ data: { handle: 'bob', memberships: { create: { teamId: vision.id, role: 'maintainer' } } } });
  ada = (await createToken(db, { userId: u.id, name: 'w', scope: 'write' })).token;
  bob = (await createToken(db, { userId: b.id, name: 'w', scope: 'write' })).token;
});

async function call(token: string, method: string, path: string, body?: unknown) {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  let payload: RequestInit['body'];
  if (body instanceof Uint8Array) {
    headers['content-type'] = 'application/octet-stream';
    payload = body as RequestInit['body'];
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  return fetch(`${reg.base}${path}`, { method, headers, ...(payload === undefined ? {} : { body: payload }) });
}

async function newJob(): Promise<string> {
  const r = await call(ada, 'POST', '/v1/jobs?executor=external', {
    ...example,
    spec: { ...example.spec, output: { repository: 'nlp/ckpt' } },
  });
  assert.equal(r.status, 201, await r.clone().text());
  return ((await r.json()) as { id: string }).id;
}

/** Uploads the files and records them as checkpoint `step`. */
async function save(job: string, step: number, files: Record<string, Buffer>, extra: Record<string, unknown> = {}) {
  for (const data of Object.values(files)) {
    const r = await call(ada, 'PUT', `/v1/jobs/${job}/checkpoints/blobs/${digestOf(data)}`, data);
    assert.ok(r.status === 201 || r.status === 200, `upload: ${r.status}`);
  }
  return call(ada, 'POST', `/v1/jobs/${job}/checkpoints`, {
    step,
    files: Object.entries(files).map(([path, data]) => ({ path, digest: digestOf(data), size: data.length })),
    ...extra,
  });
}

const json = (r: Response): Promise<any> => r.json();
const refCount = async (data: Buffer) => (await reg.prisma.blob.findUnique({ where: { digest: digestOf(data) } }))?.refCount;

describe('job checkpoints', () => {
  it('keep the newest two, hold their blobs against garbage collection, and serve them verified', async () => {
    const job = await newJob();
    const shared = randomBytes(64); // the same bytes in every checkpoint: one blob, counted per use
    const states = [10, 20, 30].map(() => randomBytes(1000));
    for (const [i, step] of [10, 20, 30].entries()) {
      const r = await save(
        job,
        step,
        { 'checkpoint.safetensors': states[i] as Buffer, 'checkpoint.json': shared },
        { metadata: { fingerprint: 'f1' } },
      );
      assert.equal(r.status, 201, await r.clone().text());
    }
    const list = await json(await call(ada, 'GET', `/v1/jobs/${job}/checkpoints`));
    assert.deepEqual(
      list.items.map((c: { step: number }) => c.step),
      [30, 20],
    );
    assert.deepEqual(list.items[0].metadata, { fingerprint: 'f1' });
    assert.equal(await refCount(shared), 2);
    assert.equal(await refCount(states[0] as Buffer), 0, 'the dropped checkpoint released its blob');
    assert.equal(await refCount(states[2] as Buffer), 1);

    const gc = await collectGarbage(reg.prisma, reg.blobs, 0, new Date(Date.now() + 1000));
    assert.ok(gc.deleted.includes(digestOf(states[0] as Buffer)));
    assert.ok(!gc.deleted.includes(digestOf(states[2] as Buffer)) && !gc.deleted.includes(digestOf(shared)));
    const file = await call(ada, 'GET', `/v1/jobs/${job}/checkpoints/30/files/checkpoint.safetensors`);
    assert.equal(file.status, 200);
    assert.equal(file.headers.get('etag'), `"${digestOf(states[2] as Buffer)}"`);
    assert.ok(Buffer.from(await file.arrayBuffer()).equals(states[2] as Buffer));
    assert.equal((await call(ada, 'GET', `/v1/jobs/${job}/checkpoints/10/files/checkpoint.safetensors`)).status, 404);
    // Another team sees nothing of the job.
    assert.equal((await call(bob, 'GET', `/v1/jobs/${job}/checkpoints`)).status, 404);
    assert.equal((await call(bob, 'GET', `/v1/jobs/${job}/checkpoints/30/files/checkpoint.json`)).status, 404);
  });

  it('a step saved again replaces its record without leaking references', async () => {
    const job = await newJob();
    const a = randomBytes(100);
    const b = randomBytes(100);
    assert.equal((await save(job, 5, { 's.bin': a })).status, 201);
    assert.equal((await save(job, 5, { 's.bin': b })).status, 201);
    assert.equal(await refCount(a), 0);
    assert.equal(await refCount(b), 1);
    const list = await json(await call(ada, 'GET', `/v1/jobs/${job}/checkpoints`));
    assert.equal(list.items.length, 1);
    assert.equal(list.items[0].files[0].digest, digestOf(b));
  });

  it('refuses records that name missing blobs, wrong sizes, repeated or unsafe paths', async () => {
    const job = await newJob();
    const data = randomBytes(50);
    assert.equal((await call(ada, 'PUT', `/v1/jobs/${job}/checkpoints/blobs/${digestOf(data)}`, data)).status, 201);
    const post = (body: unknown) => call(ada, 'POST', `/v1/jobs/${job}/checkpoints`, body);
    const missing = await post({ step: 1, files: [{ path: 'x.bin', digest: digestOf(randomBytes(8)), size: 8 }] });
    assert.equal(missing.status, 400);
    assert.match(JSON.stringify(await missing.json()), /was not uploaded; upload it, then save again/);
    const size = await post({ step: 1, files: [{ path: 'x.bin', digest: digestOf(data), size: 49 }] });
    assert.match(JSON.stringify(await size.json()), /files\[0\]\.size/);
    const twice = await post({
      step: 1,
      files: [
        { path: 'x.bin', digest: digestOf(data), size: 50 },
        { path: 'x.bin', digest: digestOf(data), size: 50 },
      ],
    });
    assert.match(JSON.stringify(await twice.json()), /appears twice/);
    for (const path of ['../x', 'a/b', '.hidden']) {
      const r = await post({ step: 1, files: [{ path, digest: digestOf(data), size: 50 }] });
      assert.equal(r.status, 400, path);
    }
    const wrong = await call(ada, 'PUT', `/v1/jobs/${job}/checkpoints/blobs/${digestOf(randomBytes(4))}`, data);
    assert.equal(wrong.status, 422, 'bytes that do not hash to the digest are refused');
    assert.equal((await call(ada, 'GET', `/v1/jobs/${job}/checkpoints`).then(json)).items.length, 0);
  });

  it('are released when the job ends, and an ended job takes no more', async () => {
    for (const end of ['succeeded', 'cancelled'] as const) {
      const job = await newJob();
      const data = randomBytes(300);
      assert.equal((await save(job, 3, { 's.bin': data })).status, 201);
      assert.equal(await refCount(data), 1);
      const r =
        end === 'cancelled'
          ? await call(ada, 'POST', `/v1/jobs/${job}:cancel`)
          : await call(ada, 'POST', `/v1/jobs/${job}/progress`, { status: 'succeeded' });
      assert.equal(r.status, 200, await r.clone().text());
      assert.equal(await refCount(data), 0, `${end}: released`);
      assert.equal((await call(ada, 'GET', `/v1/jobs/${job}/checkpoints`).then(json)).items.length, 0);
      const again = await save(job, 4, {}).catch(() => undefined);
      assert.equal(again?.status, 400, 'a record with no files is refused by the schema');
      const late = await call(ada, 'PUT', `/v1/jobs/${job}/checkpoints/blobs/${digestOf(data)}`, data);
      assert.equal(late.status, 409);
      assert.match(JSON.stringify(await late.json()), /stop working on it/);
    }
  });
});
