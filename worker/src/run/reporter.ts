/**
 * How a running job tells the world where it is: one JSON log line per event on stdout
 * (pino), and, when it runs for a registry job (LOWRANK_JOB_ID), the same progress posted
 * to POST /v1/jobs/{id}/progress, throttled so a fast loop doesn't flood the registry.
 * A 409 from the registry means the job was cancelled (or already ended): the worker stops.
 */

import { LowrankError } from '@lowrank/crds/errors';
import { createLogger, type Logger } from '@lowrank/crds/log';
import type { RegistryClient } from '@lowrank/registry-api/cli/client';

export interface Progress {
  stage: string;
  step?: number;
  total?: number;
  loss?: number;
  tokensPerSecond?: number;
  etaSeconds?: number;
  [k: string]: unknown;
}

const MIN_POST_INTERVAL_MS = 1000;

export class Reporter {
  readonly log: Logger;
  readonly #client: RegistryClient | undefined;
  readonly #jobId: string | undefined;
  readonly #started = Date.now();
  #lastPost = 0;

  constructor(log: Logger, client?: RegistryClient, jobId?: string) {
    this.log = log;
    this.#client = client;
    this.#jobId = jobId;
  }

  static create(jobId: string | undefined, client: RegistryClient | undefined): Reporter {
    const log = createLogger('worker');
    return new Reporter(jobId ? log.child({ job: jobId }) : log, client, jobId);
  }

  async #post(body: Record<string, unknown>): Promise<void> {
    if (!this.#client || !this.#jobId) return;
    try {
      await this.#client.request('POST', `/v1/jobs/${this.#jobId}/progress`, { body });
    } catch (err) {
      if (err instanceof LowrankError && err.code === 'conflict')
        throw new LowrankError('conflict', `job ${this.#jobId} was cancelled or has ended; stopping`);
      // Progress is advisory: a registry hiccup must not fail the work.
      this.log.warn({ err }, 'could not report progress to the registry');
    }
  }

  async start(kind: string, name: string): Promise<void> {
    this.log.info({ event: 'started', kind, name }, `running ${kind} ${name}`);
    await this.#post({ status: 'running', progress: { stage: 'starting' } });
  }

  /** Logged always; posted at most once a second unless `force`. */
  async progress(p: Progress, force = false): Promise<void> {
    const elapsed = (Date.now() - this.#started) / 1000;
    // The caller's own estimate wins (a resumed run knows its rate better than elapsed/step).
    const eta = p.etaSeconds ?? (p.step !== undefined && p.total && p.step > 0 ? (elapsed / p.step) * (p.total - p.step) : undefined);
    const full = { ...p, elapsedSeconds: Math.round(elapsed * 10) / 10, ...(eta === undefined ? {} : { etaSeconds: Math.round(eta) }) };
    this.log.info({ event: 'progress', ...full }, p.stage);
    if (force || Date.now() - this.#lastPost >= MIN_POST_INTERVAL_MS) {
      this.#lastPost = Date.now();
      await this.#post({ progress: full });
    }
  }

  async succeeded(output: Record<string, unknown>): Promise<void> {
    this.log.info({ event: 'succeeded', output }, 'job succeeded');
    await this.#post({ status: 'succeeded', progress: { stage: 'done', output } });
  }

  /** Final failure (not retried): the job record ends failed. A retryable one is left to the executor. */
  async failed(message: string): Promise<void> {
    this.log.error({ event: 'failed', message }, message);
    await this.#post({ status: 'failed', error: message.slice(0, 4000) }).catch(() => {});
  }
}
