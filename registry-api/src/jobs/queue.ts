/**
 * The job queue (bullmq on Redis) the local executor consumes, and the Redis channel on
 * which each job's updates are published for Server-Sent Events. The database row is the
 * record; the queue entry (same id) only says "run this".
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

export const JOB_QUEUE = 'lowrank-jobs';
export const jobChannel = (id: string) => `lowrank:job:${id}`;
/** First retry after 1 s, then 2 s, 4 s, ... (bullmq exponential backoff). */
const RETRY_BASE_DELAY_MS = 1000;

export interface JobQueue {
  /** attempts: tries in all (the spec's retry.backoffLimit + 1), exponential backoff between them. */
  enqueue(id: string, kind: string, attempts?: number): Promise<void>;
  /** Removes a job that no worker has taken yet; false if one has. */
  removeWaiting(id: string): Promise<boolean>;
  publish(id: string, event: unknown): Promise<void>;
  close(): Promise<void>;
}

export function jobQueue(redis: Redis): JobQueue {
  // bullmq wants its own connection (no request retries limit); it does not close a
  // connection it was given, so close() does.
  const connection = redis.duplicate({ maxRetriesPerRequest: null });
  const queue = new Queue(JOB_QUEUE, { connection });
  return {
    async enqueue(id, kind, attempts = 1) {
      await queue.add(
        kind,
        { jobId: id },
        { jobId: id, attempts, backoff: { type: 'exponential', delay: RETRY_BASE_DELAY_MS }, removeOnComplete: 1000, removeOnFail: 1000 },
      );
    },
    async removeWaiting(id) {
      const job = await queue.getJob(id);
      if (!job) return true;
      const state = await job.getState();
      if (state === 'waiting' || state === 'delayed' || state === 'prioritized') {
        await job.remove();
        return true;
      }
      return false;
    },
    async publish(id, event) {
      await redis.publish(jobChannel(id), JSON.stringify(event));
    },
    async close() {
      await queue.close();
      connection.disconnect();
    },
  };
}
