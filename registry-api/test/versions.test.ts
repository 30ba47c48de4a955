/**
 * Versions over real PostgreSQL and MinIO: atomic commits, conflicts between concurrent
 * pushes, reference counts, and garbage collection that really deletes bytes from S3.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { LowrankError } from '@lowrank/crds/errors';
import type { S3BlobStore } from '../src/blobs/s3-store.ts';
import type { PrismaClient } from '../src/generated/prisma/client.ts';
import { collectGarbage, uploadBlob } from '../src/versions/blobs.ts';
import { commitVersion } from '../src/versions/commit.ts';
import { migratedPrisma } from './support/database.ts';
import { freshBucket } from './support/s3.ts';

const code = (c: string, re?: RegExp) => (e: unknown) =>
  e instanceof LowrankError && e.code === c && (!re || re.test(e.message + JSON.stringify(e.errors)));

describe('versions', () => {
  let db: PrismaClient;
  let store: S3BlobStore;
  let raw: S3Client;
  let bucket: string;
  let repositoryId: string;

  before(async () => {
    ({ prisma: db } = await migratedPrisma());
    ({ store, raw, bucket } = await freshBucket());
    const org = await db.organization.create({ data: { name: 'acme' } });
    const team = await db.team.create({ data: { name: 'nlp', organizationId: org.id } });
    repositoryId = (
      await db.repository.create({ data: { namespace: 'nlp', name: 'bot', teamId: team.id, baseModel: 'meta-llama/Llama-3.2-1B' } })
    ).id;
  });
  after(async () => {
    await db.$disconnect();
    store.destroy();
    raw.destroy();
  });

  async function files(n = 2) {
    const out = [];
    for (let i = 0; i < n; i++) {
      const data = randomBytes(256 + i);
      const put = await uploadBlob(db, store, data);
      out.push({ path: i === 0 ? 'adapter_config.json' : `adapter_model-${i}.safetensors`, digest: put.digest, size: put.size });
    }
    return out;
  }
  const refCount = async (digest: string) => (await db.blob.findUniqueOrThrow({ where: { digest } })).refCount;
  const inS3 = async (digest: string) =>
    raw.send(new HeadObjectCommand({ Bucket: bucket, Key: `blobs/sha256/${digest.slice(7)}` })).then(
      () => true,
      () => false,
    );

  it('commits a version whole: files, references, lineage and the latest tag', async () => {
    const f = await files();
    const v = await commitVersion(db, {
      repositoryId,
      files: f,
      config: { r: 8 },
      rank: 8,
      lineage: [{ relation: 'trained_from', parentRef: 'hf:meta-llama/Llama-3.2-1B' }],
      tags: ['prod'],
    });
    assert.equal(v.number, 1);
    for (const x of f) assert.equal(await refCount(x.digest), 1);
    const got = await db.version.findUniqueOrThrow({ where: { id: v.id }, include: { files: true, parents: true, tags: true } });
    assert.deepEqual(got.files.map((x) => x.path).sort(), f.map((x) => x.path).sort());
    assert.equal(got.parents[0]?.relation, 'trained_from');
    assert.deepEqual(got.tags.map((t) => t.name).sort(), ['latest', 'prod']);
  });

  it('writes nothing when a file refers to a blob that was never uploaded', async () => {
    const f = await files(1);
    const before = await db.version.count();
    const ghost = { path: 'adapter_model.safetensors', digest: `sha256:${'0'.repeat(64)}`, size: 10 };
    await assert.rejects(
      commitVersion(db, { repositoryId, files: [...f, ghost], config: {} }),
      code('invalid_request', /was not uploaded; upload it/),
    );
    assert.equal(await db.version.count(), before);
    assert.equal(await refCount(f[0]?.digest as string), 0, 'no reference taken by the failed commit');
  });

  it('lets exactly one of two concurrent pushes of the same number win', async () => {
    const [a, b] = [await files(), await files()];
    const results = await Promise.allSettled([
      commitVersion(db, { repositoryId, number: 2, files: a, config: { who: 'a' } }),
      commitVersion(db, { repositoryId, number: 2, files: b, config: { who: 'b' } }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r) => r.status === 'rejected');
    assert.equal(won.length, 1);
    assert.ok(code('conflict', /version 2 already exists/)((lost[0] as PromiseRejectedResult).reason));
    const loser = results[0].status === 'fulfilled' ? b : a;
    const winner = loser === a ? b : a;
    for (const x of winner) assert.equal(await refCount(x.digest), 1);
    for (const x of loser) assert.equal(await refCount(x.digest), 0, "the loser's blobs stay unreferenced, for GC");
  });

  it('numbers concurrent pushes without a number one after another', async () => {
    const inputs = await Promise.all(Array.from({ length: 4 }, () => files(1)));
    const made = await Promise.all(inputs.map((f) => commitVersion(db, { repositoryId, files: f, config: {} })));
    assert.deepEqual(
      made.map((m) => m.number).sort((x, y) => x - y),
      [3, 4, 5, 6],
    );
  });

  it('refuses unsafe file paths and bad tags with field errors', async () => {
    const [f] = await files(1);
    const bad = { ...(f as { path: string; digest: string; size: number }), path: '../etc/passwd' };
    await assert.rejects(
      commitVersion(db, { repositoryId, files: [bad], config: {} }),
      code('invalid_request', /not a safe relative path/),
    );
    await assert.rejects(
      commitVersion(db, { repositoryId, files: [f as never], config: {}, tags: ['42'] }),
      code('invalid_request', /not all digits/),
    );
  });

  it('collects unreferenced blobs after the grace period, deleting the bytes from S3', async () => {
    const orphanBytes = randomBytes(1000);
    const orphan = await uploadBlob(db, store, orphanBytes); // a push killed before commit
    const kept = (await db.tag.findFirstOrThrow({ where: { name: 'prod' }, include: { version: { include: { files: true } } } })).version
      .files[0]?.blobDigest as string;
    assert.equal(await inS3(orphan.digest), true);
    assert.deepEqual((await collectGarbage(db, store, 3_600_000)).deleted, [], 'nothing is old enough yet');
    const later = new Date(Date.now() + 2 * 3_600_000);
    const gc = await collectGarbage(db, store, 3_600_000, later);
    assert.ok(gc.deleted.includes(orphan.digest));
    assert.ok(!gc.deleted.includes(kept));
    assert.equal(await inS3(orphan.digest), false, 'the bytes are gone from S3');
    assert.equal(await db.blob.findUnique({ where: { digest: orphan.digest } }), null);
    assert.equal(await inS3(kept), true, 'referenced blobs stay');
    // Uploading the same content again after collection stores it anew.
    const again = await uploadBlob(db, store, orphanBytes);
    assert.deepEqual([again.digest, again.created, await inS3(orphan.digest)], [orphan.digest, true, true]);
    assert.equal(await refCount(orphan.digest), 0);
  });
});
