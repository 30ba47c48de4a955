/**
 * Blob records beside the bytes: a row per stored blob with its reference count. A blob
 * is recorded as unreferenced when stored, so an upload that is never committed (a killed
 * push) is collected by garbage collection like any other unreferenced blob.
 *
 * Upload and collection of the same digest are serialised by a transaction-scoped
 * advisory lock on the digest, so collection never deletes bytes that an upload has just
 * recorded, and an upload never records bytes that collection has just deleted.
 */
import type { Readable } from 'node:stream';
import { LowrankError } from '@lowrank/crds/errors';
import { SINGLE_PUT } from '../blobs/single-put.ts';
import type { BlobStore, PutOptions, PutResult } from '../blobs/store.ts';
import type { Prisma, PrismaClient, UploadSession } from '../generated/prisma/client.ts';

export const lockDigest = (tx: Prisma.TransactionClient, digest: string) =>
  tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext(${digest}))`;

export async function uploadBlob(
  db: PrismaClient,
  store: BlobStore,
  body: Readable | Uint8Array,
  options: PutOptions = {},
): Promise<PutResult> {
  const put = await store.put(body, options);
  await recordBlob(db, store, put.digest, put.size);
  return put;
}

/** The row for bytes just stored (by upload or direct upload), unreferenced until a commit takes it. */
export async function recordBlob(db: PrismaClient, store: BlobStore, digest: string, size: number): Promise<void> {
  await db.$transaction(async (tx) => {
    await lockDigest(tx, digest);
    await recordLocked(tx, store, digest, size);
  });
}

/** recordBlob inside a transaction that already holds the digest's lock. */
export async function recordLocked(tx: Prisma.TransactionClient, store: BlobStore, digest: string, size: number): Promise<void> {
  if (!(await store.stat(digest))) {
    throw new LowrankError('unavailable', `blob ${digest} was garbage-collected or refused while it was uploaded; retry the upload`);
  }
  const existing = await tx.blob.findUnique({ where: { digest } });
  if (!existing) await tx.blob.create({ data: { digest, size: BigInt(size), unreferencedAt: new Date() } });
  // Uploaded again while waiting for collection: a fresh grace period.
  else if (existing.refCount === 0) await tx.blob.update({ where: { digest }, data: { unreferencedAt: new Date() } });
}

/**
 * Gives a direct upload up: a multipart upload's parts are dropped; what a single-request
 * upload sent to the blob's address is deleted unless the blob is recorded (then those
 * bytes are the blob, which another repository may hold) or another PUT replaced it.
 */
export async function abortSession(db: PrismaClient, store: BlobStore, session: UploadSession): Promise<void> {
  const direct = store.direct;
  if (!direct) return;
  if (session.uploadId !== SINGLE_PUT) return direct.abort(session.key, session.uploadId);
  await db.$transaction(async (tx) => {
    await lockDigest(tx, session.digest);
    if (!(await tx.blob.findUnique({ where: { digest: session.digest } }))) await direct.single.drop(session.key, session.id);
  });
}

/** Direct uploads left open longer than the grace period (a client that gave up) are aborted. */
export async function abortStaleUploads(db: PrismaClient, store: BlobStore, graceMs: number, now = new Date()): Promise<number> {
  if (!store.direct) return 0;
  const stale = await db.uploadSession.findMany({ where: { createdAt: { lte: new Date(now.getTime() - graceMs) } }, take: 1000 });
  for (const s of stale) {
    await abortSession(db, store, s);
    await db.uploadSession.delete({ where: { id: s.id } }).catch(() => {});
  }
  return stale.length;
}

export interface GcResult {
  deleted: string[];
  bytes: bigint;
}

/** Deletes blobs unreferenced for longer than the grace period, rows and bytes together. */
export async function collectGarbage(db: PrismaClient, store: BlobStore, graceMs: number, now = new Date()): Promise<GcResult> {
  const cutoff = new Date(now.getTime() - graceMs);
  const candidates = await db.blob.findMany({
    where: { refCount: 0, unreferencedAt: { lte: cutoff } },
    select: { digest: true },
    take: 1000,
  });
  const result: GcResult = { deleted: [], bytes: 0n };
  for (const { digest } of candidates) {
    const size = await db.$transaction(async (tx) => {
      await lockDigest(tx, digest);
      const row = await tx.blob.findUnique({ where: { digest } });
      // A commit may have taken a reference, or an upload refreshed it, since the query.
      if (row?.refCount !== 0 || !row.unreferencedAt || row.unreferencedAt > cutoff) return undefined;
      await tx.blob.delete({ where: { digest } });
      await store.delete(digest); // inside the transaction: if it fails, the row stays
      return row.size;
    });
    if (size === undefined) continue;
    result.deleted.push(digest);
    result.bytes += size;
  }
  return result;
}
