/**
 * Direct uploads against real MinIO.
 * Multipart (a registry that never uses single requests): a large file pushed by `lora
 * push` goes to S3 in presigned parts and is verified whole before it is kept; an
 * interrupted upload resumes with the parts S3 has; a part whose bytes differ from its
 * checksum is refused by S3; a completed upload whose content is not the claimed digest
 * stores nothing; abort and the scheduled cleanup of stale sessions leave no parts behind.
 * Single request (the default up to 1 GiB): S3 refuses bytes that are not the digest;
 * completion needs this session's own PUT (proof of possession, no existence leak); abort
 * deletes what a session sent but never a recorded blob; concurrent uploads of the same
 * bytes both end stored. A filesystem registry says to send the blob through it instead.
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
  reg = await startRegistry({ singlePutMaxBytes: 0 });
  client = await setup(reg);
});

describe('multipart direct uploads to S3', () => {
  it('pushes a large file in presigned parts, verified whole, and pulls it back', async () => {
    const dir = join(tmp, 'big');
    (await import('node:fs')).mkdirSync(dir);
    const weights = randomBytes(40 * MiB);
    writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, lora_alpha: 8 }));
    const session = await client.json<any>('POST', '/v1/repos/nlp/big/uploads', { digest: digestOf(weights), size: weights.length });
    assert.equal(session.mode, 'multipart');
    await client.request('DELETE', session.location);
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

describe('single-request direct uploads (S3 checks the digest)', () => {
  let single: TestRegistry;
  let c: RegistryClient;
  const open = (repo: string, data: Uint8Array) =>
    c.json<any>('POST', `/v1/repos/nlp/${repo}/uploads`, { digest: digestOf(data), size: data.length });
  const urlFor = async (s: any, sha256: string) =>
    (await c.json<any>('POST', `${s.location}/parts`, { parts: [{ number: 1, sha256 }] })).parts[0];
  const put = async (p: any, body: Uint8Array) => (await fetch(p.url, { method: 'PUT', headers: p.headers, body })).status;
  const complete = (s: any) => c.json<any>('POST', `${s.location}:complete`);
  const stored = async (data: Uint8Array) => {
    if (!(await single.blobs.stat(digestOf(data)))) return undefined;
    return Buffer.concat(await (await single.blobs.get(digestOf(data))).toArray());
  };

  before(async () => {
    single = await startRegistry({ singlePutMaxBytes: 32 * MiB });
    c = await setup(single);
    await c.json('POST', '/v1/repos', { namespace: 'nlp', name: 'other', baseModel: 'tiny' });
  });

  it('lora push sends a file up to the limit in one request and one above it in parts; both pull back', async () => {
    const dir = join(tmp, 'single');
    (await import('node:fs')).mkdirSync(dir);
    const small = randomBytes(20 * MiB);
    const large = randomBytes(40 * MiB);
    writeFileSync(join(dir, 'a.safetensors'), small);
    writeFileSync(join(dir, 'b.safetensors'), large);
    const [s1, s2] = [await open('big', small), await open('big', large)];
    assert.deepEqual([s1.mode, s1.partCount, s1.uploadedParts], ['single', 1, []]);
    assert.equal(s2.mode, 'multipart');
    await c.request('DELETE', s1.location);
    await c.request('DELETE', s2.location);
    const { number, uploaded } = await push(c, dir, 'nlp/big');
    assert.equal(uploaded, 2);
    const out = join(tmp, 'single-pulled');
    await pull(c, 'nlp/big', String(number), out);
    const read = (await import('node:fs')).readFileSync;
    assert.ok(read(join(out, 'a.safetensors')).equals(small));
    assert.ok(read(join(out, 'b.safetensors')).equals(large));
    assert.equal(await single.prisma.uploadSession.count(), 0);
  });

  it('is refused by S3 when the bytes are not the digest, and stores nothing', async () => {
    const claimed = randomBytes(4096);
    const s = await open('big', claimed);
    await assert.rejects(urlFor(s, b64(randomBytes(8))), /sha256 must be the session's digest/);
    const p = await urlFor(s, b64(claimed));
    assert.equal(await put(p, randomBytes(4096)), 400, 'S3 checks the whole body against the digest');
    const { 'x-amz-meta-lowrank-upload': _, ...withoutSession } = p.headers;
    const unsigned = (await fetch(p.url, { method: 'PUT', headers: withoutSession, body: claimed })).status;
    assert.ok(unsigned === 400 || unsigned === 403, `the session header is signed, got ${unsigned}`);
    await assert.rejects(complete(s), /holds nothing from this session/);
    assert.equal(await stored(claimed), undefined);
    assert.equal(await put(p, claimed), 200);
    assert.deepEqual(await complete(s), { digest: digestOf(claimed), size: 4096 });
    assert.ok((await stored(claimed))?.equals(claimed));
    assert.equal(
      (await single.prisma.blob.findUnique({ where: { digest: digestOf(claimed) } }))?.refCount,
      0,
      'unreferenced until a commit',
    );
  });

  it('makes another repository send the bytes itself before it may reference a stored blob', async () => {
    const secret = randomBytes(8192);
    const owner = await open('big', secret);
    assert.equal(await put(await urlFor(owner, b64(secret)), secret), 200);
    await complete(owner);
    // Knowing the digest: a session like any other, and completing without sending is refused.
    const guess = await open('other', secret);
    assert.deepEqual([guess.state, guess.mode, guess.uploadedParts], ['open', 'single', []]);
    const g = await urlFor(guess, b64(secret));
    assert.equal(new URL(g.url).pathname, new URL((await urlFor(owner, b64(secret)).catch(() => g)).url).pathname);
    await assert.rejects(complete(guess), /holds nothing from this session/);
    assert.equal(await put(g, randomBytes(8192)), 400);
    assert.ok((await stored(secret))?.equals(secret), 'the stored blob is untouched');
    // Sending the real bytes (over the stored copy, which they equal) is the proof.
    assert.equal(await put(g, secret), 200);
    assert.deepEqual(await complete(guess), { digest: digestOf(secret), size: secret.length });
  });

  it('abort deletes what the session sent, but never a recorded blob', async () => {
    const lost = randomBytes(1000);
    const a = await open('big', lost);
    assert.equal(await put(await urlFor(a, b64(lost)), lost), 200);
    assert.ok(await single.blobs.stat(digestOf(lost)), 'the PUT landed at the blob address');
    await c.request('DELETE', a.location);
    assert.equal(await single.blobs.stat(digestOf(lost)), undefined, 'an aborted upload leaves nothing');
    // The same, left open past the grace period: the scheduled cleanup deletes it.
    const stale = await open('big', lost);
    assert.equal(await put(await urlFor(stale, b64(lost)), lost), 200);
    assert.equal(await abortStaleUploads(single.prisma, single.blobs, 0), 1);
    assert.equal(await single.blobs.stat(digestOf(lost)), undefined);
    // A session that sent the bytes of a blob already recorded gives up: the blob stays.
    const kept = randomBytes(1000);
    const owner = await open('big', kept);
    assert.equal(await put(await urlFor(owner, b64(kept)), kept), 200);
    await complete(owner);
    const other = await open('other', kept);
    assert.equal(await put(await urlFor(other, b64(kept)), kept), 200);
    await c.request('DELETE', other.location);
    assert.ok((await stored(kept))?.equals(kept));
  });

  it('two repositories sending the same bytes at once both end stored', async () => {
    const data = randomBytes(5000);
    const [a, b] = [await open('big', data), await open('other', data)];
    const [pa, pb] = [await urlFor(a, b64(data)), await urlFor(b, b64(data))];
    assert.equal(await put(pa, data), 200);
    assert.equal(await put(pb, data), 200);
    // b's PUT came last, so a must send again (lora push does this once by itself).
    await assert.rejects(complete(a), /another upload of the same bytes replaced it/);
    assert.deepEqual(await complete(b), { digest: digestOf(data), size: data.length });
    assert.equal(await put(pa, data), 200);
    assert.deepEqual(await complete(a), { digest: digestOf(data), size: data.length });
    assert.ok((await stored(data))?.equals(data));
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
