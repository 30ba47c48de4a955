/**
 * Jobs over REST: submitJob (the custom resource or {kind, spec}, validated by the shared
 * job schema and queued for the local executor), listJobs, getJob, cancelJob,
 * reportJobProgress (from the worker running it), jobEvents (Server-Sent Events of its
 * status and progress until it ends) and the job's log lines (appended by the executor or
 * operator that runs the worker, read by `lora jobs logs` and the web).
 */
import { asResource, problemCount, validateResource } from '@lowrank/crds';
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler, Response } from 'express';
import type { Redis } from 'ioredis';
import type { Job, JobStatus, Prisma } from '../generated/prisma/client.ts';
import { releaseCheckpoints } from '../jobs/checkpoints.ts';
import { type JobQueue, jobChannel } from '../jobs/queue.ts';
import { authorize, type Context, paramsOf, principalOf } from './context.ts';

export const TERMINAL: JobStatus[] = ['succeeded', 'failed', 'cancelled'];

export const jobView = (j: Job) => ({
  id: j.id,
  kind: j.kind,
  name: j.name,
  status: j.status,
  progress: j.progress,
  attempts: j.attempts,
  error: j.error,
  createdAt: j.createdAt.toISOString(),
  startedAt: j.startedAt?.toISOString() ?? null,
  finishedAt: j.finishedAt?.toISOString() ?? null,
  spec: (j.spec as { spec?: unknown }).spec ?? null,
});

/** The team that owns a job: the namespace of the repository it writes to. */
async function teamOf(ctx: Context, spec: unknown): Promise<{ id: string; name: string }> {
  const repo = (spec as { output?: { repository?: string } }).output?.repository ?? '';
  const name = repo.split('/')[0] ?? '';
  const team = await ctx.prisma.team.findUnique({ where: { name } });
  if (!team) throw new LowrankError('not_found', `no team named "${name}" for output.repository ${repo}`);
  return team;
}

/** A job by id, as the caller may read or write it (write: it writes to the caller's team). */
export async function jobById(ctx: Context, res: Response, id: string, action: 'read' | 'write'): Promise<Job> {
  const principal = principalOf(res);
  if (!principal) throw new LowrankError('unauthorized', 'sign in: send `Authorization: Bearer <token>`');
  const job = await ctx.prisma.job.findUnique({ where: { id } });
  if (!job) throw new LowrankError('not_found', `job ${id} not found`);
  const team = await teamOf(ctx, (job.spec as { spec?: unknown }).spec);
  authorize(principal, action, { teamId: team.id, visibility: 'private' }, `job ${job.id}`);
  return job;
}

const jobFor = (ctx: Context, res: Response, action: 'read' | 'write') => jobById(ctx, res, paramsOf(res).id as string, action);

export function submitJob(ctx: Context, queue: JobQueue): RequestHandler {
  return async (req, res) => {
    const principal = principalOf(res);
    if (!principal) throw new LowrankError('unauthorized', 'sign in: send `Authorization: Bearer <token>`');
    const result = validateResource(asResource(req.body, { generateName: 'job-' }));
    if (!result.ok) throw new LowrankError('invalid_spec', `job is invalid: ${problemCount(result.errors)}`, { errors: result.errors });
    const resource = result.value as unknown as { kind: string; metadata: { name?: string; generateName?: string }; spec: unknown };
    const team = await teamOf(ctx, resource.spec);
    authorize(principal, 'write', { teamId: team.id, visibility: 'internal' }, `team ${team.name}`);
    const name = resource.metadata.name ?? `${resource.metadata.generateName ?? 'job-'}${Date.now().toString(36)}`;
    const job = await ctx.prisma.job.create({
      data: { kind: resource.kind, name, spec: resource as unknown as Prisma.InputJsonValue, submittedById: principal.userId },
    });
    const retry = (resource.spec as { retry?: { backoffLimit?: number } }).retry;
    // An external runner (the operator) runs it: only the record is made.
    if (req.query.executor !== 'external') await queue.enqueue(job.id, job.kind, (retry?.backoffLimit ?? 0) + 1);
    await ctx.prisma.auditEvent.create({
      data: {
        actorId: principal.userId,
        tokenId: principal.tokenId,
        action: 'job.submit',
        target: `job/${job.id}`,
        details: { kind: job.kind, name, executor: req.query.executor === 'external' ? 'external' : 'local' },
      },
    });
    res.status(201).location(`/v1/jobs/${job.id}`).json(jobView(job));
  };
}

export function listJobs(ctx: Context): RequestHandler {
  return async (req, res) => {
    const principal = principalOf(res);
    if (!principal) throw new LowrankError('unauthorized', 'sign in: send `Authorization: Bearer <token>`');
    const status = req.query.status as JobStatus | undefined;
    const siteAdmin = principal.isAdmin && principal.scope === 'admin';
    const jobs = await ctx.prisma.job.findMany({
      where: { ...(status ? { status } : {}), ...(siteAdmin ? {} : { submittedById: principal.userId }) },
      orderBy: { createdAt: 'desc' },
      take: 100,
    });
    res.json({ items: jobs.map(jobView) });
  };
}

export function getJob(ctx: Context): RequestHandler {
  return async (_req, res) => {
    res.json(jobView(await jobFor(ctx, res, 'read')));
  };
}

export function cancelJob(ctx: Context, queue: JobQueue): RequestHandler {
  return async (_req, res) => {
    const job = await jobFor(ctx, res, 'write');
    if (TERMINAL.includes(job.status)) throw new LowrankError('conflict', `job ${job.id} already ${job.status}`);
    // A queued job leaves the queue now; a running one is told to stop through its channel.
    await queue.removeWaiting(job.id);
    const done = await ctx.prisma.$transaction(async (tx) => {
      await releaseCheckpoints(tx, job.id);
      return tx.job.update({ where: { id: job.id }, data: { status: 'cancelled', finishedAt: new Date() } });
    });
    await queue.publish(job.id, { type: 'status', status: 'cancelled' });
    res.json(jobView(done));
  };
}

export function reportJobProgress(ctx: Context, queue: JobQueue): RequestHandler {
  return async (req, res) => {
    const job = await jobFor(ctx, res, 'write');
    const body = req.body as { status?: JobStatus; progress?: Record<string, unknown>; error?: string };
    if (TERMINAL.includes(job.status)) throw new LowrankError('conflict', `job ${job.id} already ${job.status}; stop working on it`);
    const now = new Date();
    // Every move into running is an attempt; queued means "waiting to retry".
    const starts = body.status === 'running' && job.status !== 'running';
    const ends = body.status !== undefined && TERMINAL.includes(body.status);
    const updated = await ctx.prisma.$transaction(async (tx) => {
      // An ended job is never resumed: its checkpoints go back to garbage collection.
      if (ends) await releaseCheckpoints(tx, job.id);
      return tx.job.update({
        where: { id: job.id },
        data: {
          ...(body.progress ? { progress: body.progress as Prisma.InputJsonValue } : {}),
          ...(body.status ? { status: body.status } : {}),
          ...(starts ? { attempts: { increment: 1 }, ...(job.startedAt ? {} : { startedAt: now }) } : {}),
          ...(body.status && TERMINAL.includes(body.status) ? { finishedAt: now } : {}),
          ...(body.error ? { error: body.error } : {}),
        },
      });
    });
    await queue.publish(job.id, { type: 'update', status: updated.status, progress: updated.progress, error: updated.error });
    res.json(jobView(updated));
  };
}

export function appendJobLogs(ctx: Context): RequestHandler {
  return async (req, res) => {
    const job = await jobFor(ctx, res, 'write');
    const body = req.body as { attempt?: number; lines: { stream: string; text: string }[] };
    // Numbered under the job row's lock, so concurrent appenders never collide on seq.
    await ctx.prisma.$transaction(async (tx) => {
      await tx.$queryRaw`SELECT id FROM "Job" WHERE id = ${job.id}::uuid FOR UPDATE`;
      const last = await tx.jobLog.aggregate({ where: { jobId: job.id }, _max: { seq: true } });
      const first = (last._max.seq ?? 0) + 1;
      await tx.jobLog.createMany({
        data: body.lines.map((l, i) => ({
          jobId: job.id,
          seq: first + i,
          attempt: body.attempt ?? job.attempts,
          stream: l.stream,
          text: l.text,
        })),
      });
    });
    res.status(204).end();
  };
}

export function getJobLogs(ctx: Context): RequestHandler {
  return async (req, res) => {
    const job = await jobFor(ctx, res, 'read');
    const since = req.query.since === undefined ? 0 : Number(req.query.since);
    const limit = req.query.limit === undefined ? 1000 : Number(req.query.limit);
    const rows = await ctx.prisma.jobLog.findMany({ where: { jobId: job.id, seq: { gt: since } }, orderBy: { seq: 'asc' }, take: limit });
    res.json({
      lines: rows.map((r) => ({ seq: r.seq, at: r.at.toISOString(), attempt: r.attempt, stream: r.stream, text: r.text })),
      next: rows.at(-1)?.seq ?? since,
    });
  };
}

/** SSE: the current state at once, then every update, until the job ends or the client leaves. */
export function jobEvents(ctx: Context, redis: Redis): RequestHandler {
  return async (req, res) => {
    const job = await jobFor(ctx, res, 'read');
    res
      .status(200)
      .set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.flushHeaders();
    const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    const sub = redis.duplicate();
    // After the client leaves nothing more is read: no query may outlive the request.
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      sub.disconnect();
      res.end();
    };
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    req.on('close', close);
    await sub.subscribe(jobChannel(job.id));
    sub.on('message', async () => {
      if (closed) return;
      // The row is the truth: send it, not the message, so events are never out of order.
      const now = await ctx.prisma.job.findUnique({ where: { id: job.id } });
      if (closed) return;
      if (!now) return close();
      send('job', jobView(now));
      if (TERMINAL.includes(now.status)) close();
    });
    if (closed) return;
    const current = await ctx.prisma.job.findUniqueOrThrow({ where: { id: job.id } });
    if (closed) return;
    send('job', jobView(current));
    if (TERMINAL.includes(current.status)) close();
  };
}
