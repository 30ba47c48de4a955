/**
 * Job checkpoints in the database: a checkpoint's files are blobs counted in
 * Blob.refCount like a version's files, so garbage collection keeps them while the job
 * runs, and releases them (after the usual grace period) once the job ends or a newer
 * checkpoint replaces them. Digest locks (the lock upload and collection take) are taken
 * in sorted order before any change, and are re-entrant within the transaction, so a
 * checkpoint never refers to bytes being collected and concurrent saves cannot deadlock.
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { JobCheckpoint, JobCheckpointFile, Prisma, PrismaClient } from '../generated/prisma/client.ts';
import { lockDigest } from '../versions/blobs.ts';

export interface CheckpointInput {
  step: number;
  attempt: number;
  keep: number;
  metadata: Record<string, unknown>;
  files: { path: string; digest: string; size: number }[];
}

export type CheckpointRow = JobCheckpoint & { files: JobCheckpointFile[] };

export const checkpointView = (c: CheckpointRow) => ({
  step: c.step,
  createdAt: c.createdAt.toISOString(),
  attempt: c.attempt,
  metadata: c.metadata,
  files: c.files.map((f) => ({ path: f.path, digest: f.blobDigest, size: Number(f.size) })),
});

/** Drops a job's checkpoints (all, or those with the given steps), releasing their blobs. */
export async function releaseCheckpoints(tx: Prisma.TransactionClient, jobId: string, steps?: number[]): Promise<number> {
  const where = { jobId, ...(steps ? { step: { in: steps } } : {}) };
  const files = await tx.jobCheckpointFile.findMany({ where, select: { blobDigest: true } });
  for (const digest of [...new Set(files.map((f) => f.blobDigest))].sort()) await lockDigest(tx, digest);
  for (const { blobDigest } of files) {
    // Reaching zero starts the grace period after which collection may take the bytes.
    await tx.$executeRaw`UPDATE "Blob" SET "refCount" = "refCount" - 1,
      "unreferencedAt" = CASE WHEN "refCount" = 1 THEN now() ELSE "unreferencedAt" END
      WHERE digest = ${blobDigest}`;
  }
  const { count } = await tx.jobCheckpoint.deleteMany({ where });
  return count;
}

/** Records a checkpoint whose blobs are stored; keeps only the newest `keep` of the job. */
export async function saveCheckpoint(db: PrismaClient, jobId: string, input: CheckpointInput): Promise<CheckpointRow> {
  const paths = new Set<string>();
  for (const [i, f] of input.files.entries()) {
    if (paths.has(f.path)) throw new LowrankError('invalid_request', `files[${i}].path: "${f.path}" appears twice; name each file once`);
    paths.add(f.path);
  }
  return db.$transaction(async (tx) => {
    // One writer per job at a time: concurrent saves (a stale attempt) cannot interleave.
    await tx.$queryRaw`SELECT id FROM "Job" WHERE id = ${jobId}::uuid FOR UPDATE`;
    // Every digest this save may touch (the job's current files, which it may release, and
    // the new ones), locked once in sorted order: two jobs sharing blobs cannot deadlock.
    const held = await tx.jobCheckpointFile.findMany({ where: { jobId }, select: { blobDigest: true } });
    const digests = [...new Set(input.files.map((f) => f.digest))].sort();
    for (const d of [...new Set([...held.map((f) => f.blobDigest), ...digests])].sort()) await lockDigest(tx, d);
    // Saving a step again (a retry that reached it anew) replaces the old record.
    await releaseCheckpoints(tx, jobId, [input.step]);
    const blobs = new Map((await tx.blob.findMany({ where: { digest: { in: digests } } })).map((b) => [b.digest, b]));
    const errors = input.files.flatMap((f, i) => {
      const b = blobs.get(f.digest);
      if (!b) return [{ path: `files[${i}]`, message: `blob ${f.digest} for "${f.path}" was not uploaded; upload it, then save again` }];
      if (b.size !== BigInt(f.size))
        return [{ path: `files[${i}].size`, message: `"${f.path}" is ${b.size} bytes in storage, not ${f.size}` }];
      return [];
    });
    if (errors.length > 0) throw new LowrankError('invalid_request', 'the checkpoint refers to blobs that are not stored', { errors });
    for (const f of input.files)
      await tx.blob.update({ where: { digest: f.digest }, data: { refCount: { increment: 1 }, unreferencedAt: null } });
    const row = await tx.jobCheckpoint.create({
      data: {
        jobId,
        step: input.step,
        attempt: input.attempt,
        metadata: input.metadata as Prisma.InputJsonValue,
        files: { create: input.files.map((f) => ({ path: f.path, blobDigest: f.digest, size: BigInt(f.size) })) },
      },
      include: { files: true },
    });
    const older = await tx.jobCheckpoint.findMany({
      where: { jobId },
      orderBy: { step: 'desc' },
      skip: input.keep,
      select: { step: true },
    });
    if (older.length > 0)
      await releaseCheckpoints(
        tx,
        jobId,
        older.map((c) => c.step),
      );
    return row;
  });
}
