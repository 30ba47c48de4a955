/**
 * Direct uploads against real MinIO: a large file pushed by `lora push` goes to S3 in
 * presigned parts and is verified whole before it is kept; an interrupted upload resumes
 * with the parts S3 has; a part whose bytes differ from its checksum is refused by S3; a
 * completed upload whose content is not the claimed digest stores nothing; abort and the
 * scheduled cleanup of stale sessions leave no parts behind; a filesystem registry says
 * to send the blob through it instead.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createToken } from '../src/auth/tokens.ts';
import { FilesystemBlobStore } from '../src/blobs/fs-store.ts';
import { RegistryClient } from '../src/cli/client.ts';
import { pull, push } from '../src/cli/transfer.ts';
import { abortStaleUploads } from '../src/versions/blobs.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const MiB = 2 ** 20;
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-uploads-'));
const digestOf = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const b64 = (b: Uint8Array) => createHash('sha256').update(b).digest('base64');
let reg: TestRegistry;
let client: RegistryClient;

async function setup(r: TestRegistry): Promise<RegistryClient> {
  const org = await r.prisma.organization.create({ data: { name: 'acme' } });
  const team = await r.prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const user = await r.prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: team.id } } } });
  const c = new RegistryClient({
    registry: r.base,
    token: (await createToken(r.prisma, { userId: user.id, name: 't', scope: 'write' })).token,
  });
  await c.json('POST', '/v1/repos', { namespace: 'nlp', name: 'big', baseModel: 'tiny' });
  return c;
}

async function leftovers(): Promise<{ staging: number; multipart: number }> {
  const objects = await reg.raw.send(new ListObjectsV2Command({ Bucket: reg.bucket, Prefix: 'uploads/' }));
  const multipart = await reg.raw.send(new ListMultipartUploadsCommand({ Bucket: reg.bucket }));
  return { staging: objects.KeyCount ?? 0, multipart: multipart.Uploads?.length ?? 0 };
}

before(async () => {
  reg = await startRegistry();
  client = await setup(reg);
});

describe('direct uploads to S3', () => {
  it('pushes a large file in presigned parts, verified whole, and pulls it back', async () => {
    const dir = join(tmp, 'big');
    (await import('node:fs')).mkdirSync(dir);
    const weights = randomBytes(40 * MiB);
    writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, lora_alpha: 8 }));
    const { number } = await push(client, dir, 'nlp/big');
    const out = join(tmp, 'big-pulled');
    await pull(client, 'nlp/big', String(number), out);
    assert.ok((await import('node:fs')).readFileSync(join(out, 'adapter_model.safetensors')).equals(weights));
    assert.equal(await reg.prisma.uploadSession.count(), 0);
    assert.deepEqual(await leftovers(), { staging: 0, multipart: 0 });
    // Pushing it again: the repository has it, nothing is sent.
    const again = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(weights), size: weights.length });
    assert.equal(again.state, 'exists');
  });

  it('resumes an interrupted upload with the parts S3 already has', async () => {
    const data = randomBytes(20 * MiB);
    const first = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(data), size: data.length });
    assert.equal(first.state, 'open');
    assert.equal(first.partCount, 2);
    const part1 = data.subarray(0, first.partSize);
    const { parts } = await client.json<any>('POST', `${first.location}/parts`, { parts: [{ number: 1, sha256: b64(part1) }] });
    assert.equal((await fetch(parts[0].url, { method: 'PUT', headers: parts[0].headers, body: part1 })).status, 200);
    // The client died here. Starting again finds the same session with part 1 done.
    const resumed = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(data), size: data.length });
    assert.equal(resumed.id, first.id);
    assert.deepEqual(resumed.uploadedParts, [{ number: 1, size: first.partSize }]);
    await assert.rejects(client.json('POST', `${first.location}:complete`), /upload the rest/);
    const part2 = data.subarray(first.partSize);
    const p2 = (await client.json<any>('POST', `${first.location}/parts`, { parts: [{ number: 2, sha256: b64(part2) }] })).parts[0];
    assert.equal((await fetch(p2.url, { method: 'PUT', headers: p2.headers, body: part2 })).status, 200);
    assert.deepEqual(await client.json('POST', `${first.location}:complete`), { digest: digestOf(data), size: data.length });
    assert.deepEqual(await reg.blobs.stat(digestOf(data)), { size: data.length });
    assert.equal((await reg.prisma.blob.findUnique({ where: { digest: digestOf(data) } }))?.refCount, 0, 'unreferenced until a commit');
  });

  it('refuses a part whose bytes differ from its checksum, and keeps nothing whose digest is wrong', async () => {
    const claimed = randomBytes(1024);
    const sent = randomBytes(1024);
    const s = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(claimed), size: 1024 });
    const [p] = (await client.json<any>('POST', `${s.location}/parts`, { parts: [{ number: 1, sha256: b64(claimed) }] })).parts;
    assert.equal((await fetch(p.url, { method: 'PUT', headers: p.headers, body: sent })).status, 400, 'S3 checks the part');
    // Honest per-part checksum, but not the blob the session was opened for.
    const [q] = (await client.json<any>('POST', `${s.location}/parts`, { parts: [{ number: 1, sha256: b64(sent) }] })).parts;
    assert.equal((await fetch(q.url, { method: 'PUT', headers: q.headers, body: sent })).status, 200);
    await assert.rejects(client.json('POST', `${s.location}:complete`), /do not hash to/);
    assert.equal(await reg.blobs.stat(digestOf(claimed)), undefined);
    assert.equal(await reg.blobs.stat(digestOf(sent)), undefined);
    assert.deepEqual(await leftovers(), { staging: 0, multipart: 0 });
    await assert.rejects(client.json('GET', s.location), /not found/);
  });

  it('makes another repository prove it has a stored blob before it may reference it', async () => {
    const secret = randomBytes(2048);
    const owner = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(secret), size: secret.length });
    const [p] = (await client.json<any>('POST', `${owner.location}/parts`, { parts: [{ number: 1, sha256: b64(secret) }] })).parts;
    await fetch(p.url, { method: 'PUT', headers: p.headers, body: secret });
    await client.json('POST', `${owner.location}:complete`);
    await client.json('POST', '/v1/repos', { namespace: 'nlp', name: 'other', baseModel: 'tiny' });
    // Knowing the digest is not enough: the answer looks like any new upload, and garbage is refused.
    const guess = await client.json<any>('POST', '/v1/repos/nlp/other/uploads', { digest: digestOf(secret), size: secret.length });
    assert.equal(guess.state, 'open');
    const garbage = randomBytes(2048);
    const [g] = (await client.json<any>('POST', `${guess.location}/parts`, { parts: [{ number: 1, sha256: b64(garbage) }] })).parts;
    await fetch(g.url, { method: 'PUT', headers: g.headers, body: garbage });
    await assert.rejects(client.json('POST', `${guess.location}:complete`), /do not hash to/);
    const stored = Buffer.from(await (await reg.blobs.get(digestOf(secret))).toArray().then((c) => Buffer.concat(c)));
    assert.ok(stored.equals(secret), 'the stored blob is untouched');
    // The real bytes are accepted, and nothing is left at the staging key.
    const honest = await client.json<any>('POST', '/v1/repos/nlp/other/uploads', { digest: digestOf(secret), size: secret.length });
    const [h] = (await client.json<any>('POST', `${honest.location}/parts`, { parts: [{ number: 1, sha256: b64(secret) }] })).parts;
    await fetch(h.url, { method: 'PUT', headers: h.headers, body: secret });
    assert.deepEqual(await client.json('POST', `${honest.location}:complete`), { digest: digestOf(secret), size: secret.length });
    assert.deepEqual(await leftovers(), { staging: 0, multipart: 0 });
  });

  it('aborts on request and cleans up stale sessions', async () => {
    const a = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(randomBytes(8)), size: 8 });
    await client.request('DELETE', a.location);
    await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(randomBytes(9)), size: 9 });
    assert.equal(await abortStaleUploads(reg.prisma, reg.blobs, 0), 1);
    assert.equal(await reg.prisma.uploadSession.count(), 0);
    assert.deepEqual(await leftovers(), { staging: 0, multipart: 0 });
  });

  it('refuses what the session does not have, and blobs over the size limit', async () => {
    const s = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(randomBytes(7)), size: 7 });
    await assert.rejects(
      client.json('POST', `${s.location}/parts`, { parts: [{ number: 2, sha256: b64(randomBytes(7)) }] }),
      /has parts 1 to 1/,
    );
    await assert.rejects(client.json('POST', `${s.location}/parts`, { parts: [{ number: 1, sha256: 'nope' }] }), /does not match/);
    await assert.rejects(
      client.json('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(randomBytes(7)), size: 2 ** 40 }),
      /limited to/,
    );
    await client.request('DELETE', s.location);
  });
});

describe('a registry that stores blobs on its filesystem', () => {
  it('says to send the blob through it, and lora push does', async () => {
    const fsReg = await startRegistry({ blobs: new FilesystemBlobStore(mkdtempSync(join(tmpdir(), 'fs-blobs-'))) });
    const c = await setup(fsReg);
    const data = randomBytes(17 * MiB);
    const s = await c.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(data), size: data.length });
    assert.deepEqual([s.state, s.location], ['proxy', `/v1/repos/nlp/big/blobs/${digestOf(data)}`]);
    const dir = join(tmp, 'fs');
    (await import('node:fs')).mkdirSync(dir);
    writeFileSync(join(dir, 'weights.bin'), data);
    const { number } = await push(c, dir, 'nlp/big');
    assert.equal(number, 1);
  });
});
