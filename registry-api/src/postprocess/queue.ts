/**
 * Post-processing queue (bullmq): diagnostics for each new version, and the repeatable
 * garbage collection of unreferenced blobs. The registry enqueues; its own bull worker
 * (worker.ts) runs them, so any replica may pick a task up.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

export const POSTPROCESS_QUEUE = 'lowrank-postprocess';

export interface PostprocessQueue {
  diagnostics(versionId: string): Promise<void>;
  /** Runs GC every `everyMs`, deleting blobs unreferenced for longer than `graceMs`. */
  scheduleGc(everyMs: number, graceMs: number): Promise<void>;
  close(): Promise<void>;
}

export function postprocessQueue(redis: Redis): PostprocessQueue {
  const connection = redis.duplicate({ maxRetriesPerRequest: null });
  const queue = new Queue(POSTPROCESS_QUEUE, { connection });
  return {
    async diagnostics(versionId) {
      await queue.add(
        'diagnostics',
        { versionId },
        {
          jobId: `diagnostics-${versionId}`,
          attempts: 3,
          backoff: { type: 'exponential', delay: 2000 },
          removeOnComplete: 1000,
          removeOnFail: 1000,
        },
      );
    },
    async scheduleGc(everyMs, graceMs) {
      await queue.upsertJobScheduler('gc', { every: everyMs }, { name: 'gc', data: { graceMs } });
    },
    async close() {
      await queue.close();
      connection.disconnect();
    },
  };
}
