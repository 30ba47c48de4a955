/**
 * A running job's checkpoints over REST: the worker uploads each file's bytes
 * (uploadCheckpointBlob), then records the checkpoint (saveJobCheckpoint); a retry, on any
 * machine, lists them (listJobCheckpoints) and downloads the newest
 * (downloadCheckpointFile). Writing needs write access to the job and a job still under
 * way; the checkpoints are released when the job ends (see reportJobProgress, cancelJob).
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import type { Job } from '../generated/prisma/client.ts';
import { checkpointView, saveCheckpoint } from '../jobs/checkpoints.ts';
import { uploadBlob } from '../versions/blobs.ts';
import type { Context } from './context.ts';
import { paramsOf } from './context.ts';
import { jobById, TERMINAL } from './jobs.ts';

function underWay(job: Job): void {
  if (TERMINAL.includes(job.status))
    throw new LowrankError('conflict', `job ${job.id} already ${job.status}: its checkpoints were released; stop working on it`);
}

export function uploadCheckpointBlob(ctx: Context): RequestHandler {
  return async (req, res) => {
    const job = await jobById(ctx, res, paramsOf(res).id as string, 'write');
    underWay(job);
    const length = req.get('content-length');
    const put = await uploadBlob(ctx.prisma, ctx.blobs, req as Readable, {
      expectedDigest: paramsOf(res).digest as string,
      maxBytes: ctx.maxBlobBytes,
      ...(length === undefined ? {} : { expectedSize: Number(length) }),
    });
    res.status(put.created ? 201 : 200).json({ digest: put.digest, size: put.size });
  };
}

export function saveJobCheckpoint(ctx: Context): RequestHandler {
  return async (req, res) => {
    const job = await jobById(ctx, res, paramsOf(res).id as string, 'write');
    underWay(job);
    const body = req.body as {
      step: number;
      attempt?: number;
      keep?: number;
      metadata?: Record<string, unknown>;
      files: { path: string; digest: string; size: number }[];
    };
    const row = await saveCheckpoint(ctx.prisma, job.id, {
      step: body.step,
      attempt: body.attempt ?? job.attempts,
      keep: body.keep ?? 2,
      metadata: body.metadata ?? {},
      files: body.files,
    });
    ctx.log.info({ job: job.id, step: row.step, files: row.files.length }, 'checkpoint saved');
    res.status(201).location(`/v1/jobs/${job.id}/checkpoints`).json(checkpointView(row));
  };
}

export function listJobCheckpoints(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const job = await jobById(ctx, res, paramsOf(res).id as string, 'read');
    const rows = await ctx.prisma.jobCheckpoint.findMany({ where: { jobId: job.id }, orderBy: { step: 'desc' }, include: { files: true } });
    res.json({ items: rows.map(checkpointView) });
  };
}

export function downloadCheckpointFile(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const { id, step, path } = paramsOf(res);
    const job = await jobById(ctx, res, id as string, 'read');
    const file = await ctx.prisma.jobCheckpointFile.findUnique({
      where: { jobId_step_path: { jobId: job.id, step: Number(step), path: path as string } },
    });
    if (!file) throw new LowrankError('not_found', `job ${job.id} has no checkpoint file "${path}" at step ${step}`);
    res.status(200).set({
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(file.size),
      ETag: `"${file.blobDigest}"`,
      'Cache-Control': 'no-store',
    });
    await pipeline(await ctx.blobs.get(file.blobDigest), res);
  };
}
