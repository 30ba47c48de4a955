/**
 * A work queue of resource keys, like client-go's: a key is queued at most once, is never
 * processed by two workers at a time (an event during processing queues it again for
 * afterwards), failures back off exponentially per key, and `after` schedules a later look.
 */
export type Handler = (key: string) => Promise<{ requeueAfterMs?: number }>;

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly waiters: (() => void)[] = [];
  private running = 0;
  private stopped = false;
  private readonly handler: Handler;
  private readonly concurrency: number;
  private readonly onError: (key: string, err: unknown, retryMs: number) => void;
  private readonly onDepth: (n: number) => void;

  constructor(opts: {
    handler: Handler;
    concurrency: number;
    onError: (key: string, err: unknown, retryMs: number) => void;
    onDepth?: (n: number) => void;
  }) {
    this.handler = opts.handler;
    this.concurrency = opts.concurrency;
    this.onError = opts.onError;
    this.onDepth = opts.onDepth ?? (() => {});
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.onDepth(this.queue.length);
    this.pump();
  }

  after(key: string, ms: number): void {
    if (this.stopped) return;
    const prev = this.timers.get(key);
    if (prev) clearTimeout(prev);
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    t.unref();
    this.timers.set(key, t);
  }

  private pump(): void {
    while (!this.stopped && this.running < this.concurrency && this.queue.length > 0) {
      const key = this.queue.shift() as string;
      this.queued.delete(key);
      this.onDepth(this.queue.length);
      this.active.add(key);
      this.running++;
      void this.process(key);
    }
  }

  private async process(key: string): Promise<void> {
    try {
      const r = await this.handler(key);
      this.failures.delete(key);
      if (r.requeueAfterMs !== undefined) this.after(key, r.requeueAfterMs);
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const retryMs = Math.min(200 * 2 ** (n - 1), 60_000);
      this.onError(key, err, retryMs);
      this.after(key, retryMs);
    } finally {
      this.active.delete(key);
      this.running--;
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
      if (this.running === 0) for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Stops taking work and resolves when the in-flight reconciles have finished (or after timeoutMs). */
  async drain(timeoutMs: number): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    if (this.running === 0) return;
    await Promise.race([new Promise<void>((r) => this.waiters.push(r)), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  get depth(): number {
    return this.queue.length;
  }
}
