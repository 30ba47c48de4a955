/**
 * The registry's own bull worker for post-processing: diagnostics of new versions and the
 * scheduled garbage collection. Native work runs on this process's thread; the
 * concurrency of 1 keeps it from starving request handling on a small machine.
 */
import type { Logger } from '@lowrank/crds/log';
import { type Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { BlobStore } from '../blobs/store.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { abortStaleUploads, collectGarbage } from '../versions/blobs.ts';
import { computeDiagnostics } from './diagnostics.ts';
import { POSTPROCESS_QUEUE } from './queue.ts';

export interface PostprocessWorker {
  ready(): Promise<void>;
  close(): Promise<void>;
}

export function startPostprocessWorker(deps: { redis: Redis; prisma: PrismaClient; blobs: BlobStore; log: Logger }): PostprocessWorker {
  const connection = deps.redis.duplicate({ maxRetriesPerRequest: null });
  const worker = new Worker(
    POSTPROCESS_QUEUE,
    async (job: Job) => {
      if (job.name === 'diagnostics') {
        const { versionId } = job.data as { versionId: string };
        const data = await computeDiagnostics(deps.prisma, deps.blobs, versionId);
        deps.log.info({ event: 'diagnostics', versionId, kind: data.kind }, 'diagnostics computed');
        return;
      }
      if (job.name === 'gc') {
        const { graceMs } = job.data as { graceMs: number };
        const aborted = await abortStaleUploads(deps.prisma, deps.blobs, graceMs);
        const result = await collectGarbage(deps.prisma, deps.blobs, graceMs);
        deps.log.info(
          { event: 'gc', deleted: result.deleted.length, bytes: Number(result.bytes), abortedUploads: aborted },
          'garbage collected',
        );
        return;
      }
      throw new Error(`unknown post-processing task ${job.name}`);
    },
    { connection, concurrency: 1 },
  );
  worker.on('failed', (job, err) => deps.log.warn({ task: job?.name, data: job?.data, err }, 'post-processing failed'));
  worker.on('error', (err) => deps.log.error({ err }, 'post-processing queue error'));
  return {
    ready: () => worker.waitUntilReady().then(() => undefined),
    async close() {
      await worker.close();
      connection.disconnect();
    },
  };
}
