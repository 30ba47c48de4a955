/**
 * A job's log lines go to two places: a file per job on the executor's disk (kept after
 * the job, for operators) and the registry (POST /v1/jobs/{id}/logs, for `lora jobs logs`
 * and the web), batched so a chatty worker costs a request per half second, not per line.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '@lowrank/crds/log';
import type { RegistryClient } from '@lowrank/registry-api/cli/client';

type Stream = 'stdout' | 'stderr' | 'executor';

const FLUSH_MS = 500;
const MAX_BATCH = 500;
const MAX_LINE = 16384;

export class LogShipper {
  readonly #file: WriteStream;
  readonly #client: RegistryClient;
  readonly #jobId: string;
  readonly #attempt: number;
  readonly #log: Logger;
  #pending: { stream: Stream; text: string }[] = [];
  #timer: NodeJS.Timeout | undefined;
  #inflight: Promise<void> = Promise.resolve();

  constructor(path: string, client: RegistryClient, jobId: string, attempt: number, log: Logger) {
    mkdirSync(dirname(path), { recursive: true });
    this.#file = createWriteStream(path, { flags: 'a' });
    this.#client = client;
    this.#jobId = jobId;
    this.#attempt = attempt;
    this.#log = log;
  }

  line(stream: Stream, text: string): void {
    this.#file.write(`${JSON.stringify({ at: new Date().toISOString(), attempt: this.#attempt, stream, text })}\n`);
    this.#pending.push({ stream, text: text.length > MAX_LINE ? `${text.slice(0, MAX_LINE - 1)}…` : text });
    if (this.#pending.length >= MAX_BATCH) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending.splice(0, MAX_BATCH);
    if (batch.length > 0) {
      // Sequential, so lines keep their order in the registry.
      this.#inflight = this.#inflight.then(() =>
        this.#client
          .request('POST', `/v1/jobs/${this.#jobId}/logs`, { body: { attempt: this.#attempt, lines: batch } })
          .then(() => undefined)
          .catch((err: unknown) => this.#log.warn({ err, job: this.#jobId }, 'could not ship log lines to the registry (kept on disk)')),
      );
    }
    return this.#pending.length > 0 ? this.flush() : this.#inflight;
  }

  async close(): Promise<void> {
    await this.flush();
    await new Promise<void>((resolve) => this.#file.end(resolve));
  }
}
