/**
 * The local executor: what runs jobs when there is no Kubernetes. It takes job ids from
 * the registry's bullmq queue (POST /v1/jobs puts them there), runs each as a
 * `lora-worker run` child process (at most `concurrency` at once), ships its logs,
 * kills it when the job is cancelled, and decides retries from the exit status: bad
 * input (65) fails at once, anything else is retried with exponential backoff until the
 * spec's retry.backoffLimit is spent, then the job is marked failed.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { LowrankError } from '@lowrank/crds/errors';
import { createLogger, type Logger } from '@lowrank/crds/log';
import { RegistryClient } from '@lowrank/registry-api/cli/client';
import { type Job as QueueJob, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { EXIT } from '../exit-codes.ts';
import { LogShipper } from './log-shipper.ts';

/** The registry's queue and channel names (registry-api/src/jobs/queue.ts). */
const JOB_QUEUE = 'lowrank-jobs';
const jobChannel = (id: string) => `lowrank:job:${id}`;
const KILL_GRACE_MS = 10_000;
const CLI = new URL('../cli.ts', import.meta.url).pathname;

export interface ExecutorOptions {
  redisUrl: string;
  registryUrl: string;
  /** A token that may write every team's jobs (a site admin's service token). */
  token: string;
  concurrency?: number;
  /** Per-job spec, log and result files; default a directory under the OS temp dir. */
  logsDir?: string;
  /** Per-job scratch space (inputs a retry can reuse). */
  workRoot?: string;
  log?: Logger;
}

export interface Executor {
  close(): Promise<void>;
  /** Resolves when the queue connection is ready. */
  ready(): Promise<void>;
}

interface JobRecord {
  id: string;
  kind: string;
  name: string;
  status: string;
  attempts: number;
  spec: Record<string, unknown> | null;
}

export async function startExecutor(options: ExecutorOptions): Promise<Executor> {
  const log = options.log ?? createLogger('executor');
  const client = new RegistryClient({ registry: options.registryUrl, token: options.token });
  const logsDir = options.logsDir ?? join(tmpdir(), 'lowrank-executor', 'logs');
  const workRoot = options.workRoot ?? join(tmpdir(), 'lowrank-executor', 'work');
  const connection = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
  const sub = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
  const cancelHandlers = new Map<string, () => void>();
  sub.on('message', async (channel: string) => {
    const id = channel.slice(jobChannel('').length);
    const handler = cancelHandlers.get(id);
    if (!handler) return;
    // The job row is the truth: only a cancelled row stops the worker.
    const job = await client.json<JobRecord>('GET', `/v1/jobs/${id}`).catch(() => undefined);
    if (job?.status === 'cancelled') handler();
  });

  async function runQueued(queued: QueueJob): Promise<void> {
    const id = (queued.data as { jobId: string }).jobId;
    const attempt = queued.attemptsMade + 1;
    const maxAttempts = queued.opts.attempts ?? 1;
    const jobLog = log.child({ job: id, attempt });
    const job = await client.json<JobRecord>('GET', `/v1/jobs/${id}`);
    if (['succeeded', 'failed', 'cancelled'].includes(job.status)) {
      jobLog.info({ status: job.status }, 'job already ended; skipping');
      return;
    }
    const dir = join(logsDir, id);
    mkdirSync(dir, { recursive: true });
    const specFile = join(dir, 'spec.json');
    const resultFile = join(dir, `result-${attempt}.json`);
    writeFileSync(
      specFile,
      JSON.stringify({ apiVersion: 'lora.lowrank.dev/v1alpha1', kind: job.kind, metadata: { name: job.name }, spec: job.spec }),
    );
    const logs = new LogShipper(join(dir, 'job.log'), client, id, attempt, jobLog);
    logs.line('executor', `attempt ${attempt} of ${maxAttempts}: lora-worker run (${job.kind} ${job.name})`);
    // The attempt counts from here, even if the worker dies before it can say so.
    await report(id, { status: 'running', progress: { stage: 'starting', attempt } });
    jobLog.info({ event: 'job-start', kind: job.kind, name: job.name }, 'running job');

    const child = spawn(process.execPath, [CLI, 'run', '--spec', specFile], {
      env: {
        ...process.env,
        LOWRANK_REGISTRY_URL: options.registryUrl,
        LOWRANK_TOKEN: options.token,
        LOWRANK_JOB_ID: id,
        LOWRANK_RESULT_FILE: resultFile,
        LOWRANK_WORK_DIR: join(workRoot, id),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let cancelled = false;
    let killTimer: NodeJS.Timeout | undefined;
    cancelHandlers.set(id, () => {
      if (cancelled) return;
      cancelled = true;
      logs.line('executor', 'job cancelled: stopping the worker (SIGTERM)');
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    });
    await sub.subscribe(jobChannel(id));
    // A cancel that landed between the GET above and the subscription.
    const now = await client.json<JobRecord>('GET', `/v1/jobs/${id}`).catch(() => job);
    if (now.status === 'cancelled') cancelHandlers.get(id)?.();

    createInterface({ input: child.stdout }).on('line', (l) => logs.line('stdout', l));
    createInterface({ input: child.stderr }).on('line', (l) => logs.line('stderr', l));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
      child.on('exit', (c, s) => resolve([c, s]));
      child.on('error', (err) => {
        logs.line('executor', `could not start the worker: ${err.message}`);
        resolve([EXIT.internal, null]);
      });
    });
    clearTimeout(killTimer);
    cancelHandlers.delete(id);
    await sub.unsubscribe(jobChannel(id));
    const outcome = signal ? `killed by ${signal}` : `exit status ${code}`;
    logs.line('executor', `worker ended: ${outcome}`);
    await logs.close();
    jobLog.info({ event: 'job-end', code, signal, cancelled }, 'worker ended');

    if (cancelled || code === EXIT.ok) return;
    const message = readResult(resultFile) ?? `the worker ended with ${outcome}`;
    if (code === EXIT.badInput || code === EXIT.usage) {
      // The worker has already marked a bad-input job failed; a usage error is ours.
      if (code === EXIT.usage) await report(id, { status: 'failed', error: message });
      throw new UnrecoverableError(message);
    }
    if (attempt < maxAttempts) {
      const delay = 1000 * 2 ** (attempt - 1);
      await report(id, {
        status: 'queued',
        progress: { stage: 'retrying', attempt, of: maxAttempts, reason: message, retryInSeconds: delay / 1000 },
      });
      throw new Error(message);
    }
    await report(id, { status: 'failed', error: `${message} (after ${attempt} attempt${attempt === 1 ? '' : 's'})` });
    throw new UnrecoverableError(message);
  }

  async function report(id: string, body: Record<string, unknown>): Promise<void> {
    await client.request('POST', `/v1/jobs/${id}/progress`, { body }).catch((err: unknown) => {
      if (!(err instanceof LowrankError && err.code === 'conflict')) log.warn({ err, job: id }, 'could not update the job record');
    });
  }

  const worker = new Worker(JOB_QUEUE, runQueued, { connection, concurrency: options.concurrency ?? 1 });
  worker.on('failed', (job, err) => log.info({ job: job?.id, err: err.message }, 'attempt failed'));
  worker.on('error', (err) => log.error({ err }, 'queue error'));
  log.info({ event: 'executor-start', concurrency: options.concurrency ?? 1, logsDir }, 'executor waiting for jobs');
  return {
    ready: () => worker.waitUntilReady().then(() => undefined),
    async close() {
      for (const cancel of cancelHandlers.values()) cancel();
      await worker.close();
      sub.disconnect();
      connection.disconnect();
    },
  };
}

function readResult(path: string): string | undefined {
  try {
    const r = JSON.parse(readFileSync(path, 'utf8')) as { message?: string };
    return r.message;
  } catch {
    return undefined;
  }
}
