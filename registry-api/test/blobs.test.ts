/**
 * The content-addressed blob store, the same suite on both backends: the filesystem
 * (embedded default) and S3 on the real MinIO that `npm test` starts.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, ListMultipartUploadsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { LowrankError } from '@lowrank/crds/errors';
import { serviceEnv } from '@lowrank/e2e/env';
import { FilesystemBlobStore } from '../src/blobs/fs-store.ts';
import { S3BlobStore } from '../src/blobs/s3-store.ts';
import type { BlobStore } from '../src/blobs/store.ts';

const digestOf = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const isCode = (code: string, re?: RegExp) => (err: unknown) =>
  err instanceof LowrankError && err.code === code && (!re || re.test(err.message));

interface Backend {
  name: string;
  store: BlobStore;
  /** Replaces the stored bytes behind the store's back, as disk or bucket corruption would. */
  corrupt(digest: string, bytes: Uint8Array): Promise<void>;
  /** Leftovers of refused uploads: spool files and unfinished multipart uploads. */
  leftovers(): Promise<number>;
  close(): void;
}

function filesystemBackend(): Backend {
  const root = mkdtempSync(join(tmpdir(), 'blobs-fs-'));
  return {
    name: 'filesystem',
    store: new FilesystemBlobStore(root),
    corrupt: async (digest, bytes) => writeFileSync(join(root, 'blobs', 'sha256', digest.slice(7)), bytes),
    leftovers: async () => readdirSync(join(root, 'tmp')).length,
    close: () => {},
  };
}

async function s3Backend(): Promise<Backend> {
  const client = {
    endpoint: serviceEnv('S3_ENDPOINT'),
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: serviceEnv('S3_ACCESS_KEY_ID'), secretAccessKey: serviceEnv('S3_SECRET_ACCESS_KEY') },
  };
  const bucket = `blobs-${randomBytes(6).toString('hex')}`;
  const raw = new S3Client(client);
  await raw.send(new CreateBucketCommand({ Bucket: bucket }));
  const spoolDir = mkdtempSync(join(tmpdir(), 'blobs-spool-'));
  // 5 MiB parts (the S3 minimum) so the 12 MiB blob below goes multipart.
  const store = new S3BlobStore({ bucket, prefix: 'registry/', client, spoolDir, partSize: 5 << 20, queueSize: 2 });
  return {
    name: 's3 (MinIO)',
    store,
    corrupt: async (digest, bytes) => {
      await raw.send(new PutObjectCommand({ Bucket: bucket, Key: `registry/blobs/sha256/${digest.slice(7)}`, Body: bytes }));
    },
    leftovers: async () => {
      const mp = await raw.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      return readdirSync(spoolDir).length + (mp.Uploads?.length ?? 0);
    },
    close: () => {
      store.destroy();
      raw.destroy();
    },
  };
}

for (const make of [filesystemBackend, s3Backend]) {
  describe(`blob store: ${make.name.replace('Backend', '')}`, () => {
    let b: Backend;
    before(async () => {
      b = await make();
    });
    after(() => b.close());

    it('stores content under its sha256 and reads it back verified', async () => {
      const data = randomBytes(1000);
      const put = await b.store.put(data);
      assert.deepEqual(put, { digest: digestOf(data), size: 1000, created: true });
      assert.deepEqual(await b.store.stat(put.digest), { size: 1000 });
      assert.deepEqual(await buffer(await b.store.get(put.digest)), data);
    });

    it('deduplicates identical content, also under concurrent puts', async () => {
      const data = randomBytes(4096);
      const results = await Promise.all(Array.from({ length: 5 }, () => b.store.put(Readable.from([data]))));
      assert.equal(new Set(results.map((r) => r.digest)).size, 1);
      assert.equal(results.filter((r) => r.created).length >= 1, true);
      const again = await b.store.put(data);
      assert.equal(again.created, false);
    });

    it('streams a large blob in and out (multipart on S3)', async () => {
      const chunks = Array.from({ length: 12 }, () => randomBytes(1 << 20));
      const all = Buffer.concat(chunks);
      const put = await b.store.put(Readable.from(chunks), { expectedDigest: digestOf(all), expectedSize: all.length });
      assert.equal(put.size, all.length);
      assert.ok((await buffer(await b.store.get(put.digest))).equals(all));
    });

    it('stores nothing when the content does not match the announced digest or size', async () => {
      const data = randomBytes(100);
      await assert.rejects(
        b.store.put(data, { expectedDigest: digestOf(randomBytes(100)) }),
        isCode('invalid_file', /hashes to sha256:.*not sha256:/),
      );
      await assert.rejects(b.store.put(data, { expectedSize: 99 }), isCode('invalid_file', /has 100 bytes but 99 were announced/));
      assert.equal(await b.store.stat(digestOf(data)), undefined);
      assert.equal(await b.leftovers(), 0);
    });

    it('refuses content over the size limit and keeps nothing of it', async () => {
      const data = randomBytes(2048);
      await assert.rejects(
        b.store.put(Readable.from([data.subarray(0, 1024), data.subarray(1024)]), { maxBytes: 1500 }),
        isCode('payload_too_large'),
      );
      assert.equal(await b.store.stat(digestOf(data)), undefined);
      assert.equal(await b.leftovers(), 0);
    });

    it('keeps nothing of an upload whose source fails midway', async () => {
      const failing = new Readable({
        read() {
          this.push(randomBytes(1024));
          this.destroy(new Error('connection reset by client'));
        },
      });
      await assert.rejects(b.store.put(failing), /connection reset by client/);
      assert.equal(await b.leftovers(), 0);
    });

    it('detects corrupted storage on read instead of serving wrong bytes', async () => {
      const data = randomBytes(512);
      const { digest } = await b.store.put(data);
      const bad = Buffer.from(data);
      bad[100] = (bad[100] ?? 0) ^ 0xff;
      await b.corrupt(digest, bad);
      await assert.rejects(buffer(await b.store.get(digest)), isCode('internal', /is corrupt in storage/));
    });

    it('answers unknown and malformed digests clearly, and deletes', async () => {
      await assert.rejects(b.store.get(digestOf(randomBytes(8))), isCode('not_found'));
      await assert.rejects(b.store.get('sha256:XYZ'), isCode('invalid_request', /expected sha256:<64 lowercase hex digits>/));
      await assert.rejects(b.store.stat('md5:abc'), isCode('invalid_request'));
      const { digest } = await b.store.put(randomBytes(64));
      await b.store.delete(digest);
      assert.equal(await b.store.stat(digest), undefined);
    });
  });
}
