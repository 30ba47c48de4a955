/**
 * The registry's HTTP app. Every route comes from the OpenAPI document: this file maps
 * each operationId to its handler, and the document's schemas validate the request
 * before the handler runs. Callers are identified on every request; each handler checks
 * what the caller may do with what it names.
 */
import type { Logger } from '@lowrank/crds/log';
import express, { type Express, type RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import type { Pool } from 'pg';
import { authenticate } from './auth/principal.ts';
import type { BlobStore } from './blobs/store.ts';
import type { PrismaClient } from './generated/prisma/client.ts';
import type { JobQueue } from './jobs/queue.ts';
import { expressPath, operations } from './openapi/document.ts';
import { requestValidator } from './openapi/request-validator.ts';
import type { PostprocessQueue } from './postprocess/queue.ts';
import { errorHandler, notFound } from './problem.ts';
import { type RateLimitOptions, rateLimiter } from './rate-limit.ts';
import { downloadArchive } from './routes/archive.ts';
import { headBlob, uploadBlob } from './routes/blobs.ts';
import { downloadCheckpointFile, listJobCheckpoints, saveJobCheckpoint, uploadCheckpointBlob } from './routes/checkpoints.ts';
import type { Context } from './routes/context.ts';
import { compareVersions, getDiagnostics } from './routes/diagnostics.ts';
import { downloadFile } from './routes/files.ts';
import { hubModelInfo, hubResolve, hubTree } from './routes/hf.ts';
import { appendJobLogs, cancelJob, getJob, getJobLogs, jobEvents, listJobs, reportJobProgress, submitJob } from './routes/jobs.ts';
import { getMe } from './routes/me.ts';
import { createRepository, getRepository } from './routes/repositories.ts';
import { searchRepositories } from './routes/search.ts';
import { getHealth, getJobSchema, getOpenApi, getReadiness, listJobSchemas, validateJob } from './routes/system.ts';
import { deleteTag, setTag, yankVersion } from './routes/tags.ts';
import { abortUpload, completeUpload, getUpload, presignUploadParts, startUpload } from './routes/uploads.ts';
import { commitVersion, getLineage, getVersion, listVersions } from './routes/versions.ts';
import { webCatalog } from './routes/web.ts';

export interface AppDeps {
  db: Pool;
  redis: Redis;
  prisma: PrismaClient;
  blobs: BlobStore;
  log: Logger;
  /** The queue jobs submitted over REST go to (the local executor consumes it). */
  jobs: JobQueue;
  /** Where new versions are queued for diagnostics; none: they are not computed. */
  postprocess?: PostprocessQueue;
  /** Largest accepted blob upload (default 20 GiB). */
  maxBlobBytes?: number;
  /** Per-caller request limits (none when unset). */
  rateLimit?: RateLimitOptions;
  /** Express 'trust proxy' (e.g. 1 behind one ingress), so limits see client addresses. */
  trustProxy?: number;
  /** The built web catalog (web/dist), served at / after the API routes; unset or unbuilt: no catalog. */
  webDist?: string;
}

export function createApp(deps: AppDeps): Express {
  const ctx: Context = {
    prisma: deps.prisma,
    blobs: deps.blobs,
    log: deps.log,
    maxBlobBytes: deps.maxBlobBytes ?? 20 * 2 ** 30,
    ...(deps.postprocess ? { postprocess: deps.postprocess } : {}),
  };
  const handlers: Record<string, RequestHandler> = {
    getHealth,
    getReadiness: getReadiness(deps.db, deps.redis),
    getOpenApi,
    listJobSchemas,
    getJobSchema,
    validateJob,
    getMe: getMe(ctx),
    submitJob: submitJob(ctx, deps.jobs),
    listJobs: listJobs(ctx),
    getJob: getJob(ctx),
    cancelJob: cancelJob(ctx, deps.jobs),
    reportJobProgress: reportJobProgress(ctx, deps.jobs),
    jobEvents: jobEvents(ctx, deps.redis),
    getJobLogs: getJobLogs(ctx),
    appendJobLogs: appendJobLogs(ctx),
    listJobCheckpoints: listJobCheckpoints(ctx),
    saveJobCheckpoint: saveJobCheckpoint(ctx),
    uploadCheckpointBlob: uploadCheckpointBlob(ctx),
    downloadCheckpointFile: downloadCheckpointFile(ctx),
    createRepository: createRepository(ctx),
    getRepository: getRepository(ctx),
    searchRepositories: searchRepositories(ctx),
    headBlob: headBlob(ctx),
    uploadBlob: uploadBlob(ctx),
    startUpload: startUpload(ctx),
    getUpload: getUpload(ctx),
    abortUpload: abortUpload(ctx),
    presignUploadParts: presignUploadParts(ctx),
    completeUpload: completeUpload(ctx),
    listVersions: listVersions(ctx),
    commitVersion: commitVersion(ctx),
    getVersion: getVersion(ctx),
    downloadFile: downloadFile(ctx),
    downloadArchive: downloadArchive(ctx),
    getLineage: getLineage(ctx),
    getDiagnostics: getDiagnostics(ctx),
    compareVersions: compareVersions(ctx),
    setTag: setTag(ctx),
    deleteTag: deleteTag(ctx),
    yankVersion: yankVersion(ctx),
    hubModelInfo: hubModelInfo(ctx),
    hubModelInfoAtRevision: hubModelInfo(ctx),
    hubTree: hubTree(ctx),
    hubTreeAtPath: hubTree(ctx),
    hubResolve: hubResolve(ctx),
    hubResolveHead: hubResolve(ctx),
  };

  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  if (deps.trustProxy !== undefined) app.set('trust proxy', deps.trustProxy);
  app.use(express.json({ limit: '1mb', type: ['application/json', 'application/*+json'] }));
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      deps.log.info(
        { method: req.method, path: req.path, status: res.statusCode, ms: Math.round(ms * 10) / 10, user: res.locals.principal?.handle },
        'request',
      );
    });
    next();
  });
  app.use(async (req, res, next) => {
    res.locals.principal = await authenticate(deps.prisma, req.get('authorization'));
    next();
  });
  if (deps.rateLimit) app.use(rateLimiter(deps.redis, deps.rateLimit));
  for (const op of operations()) {
    const handler = handlers[op.operationId];
    if (!handler) throw new Error(`openapi.yaml names operation ${op.operationId}, which has no handler`);
    app[op.method](expressPath(op.path), requestValidator(op), handler);
  }
  const web = deps.webDist ? webCatalog(deps.webDist) : null;
  if (web) app.use(web);
  app.use(notFound);
  app.use(errorHandler(deps.log));
  return app;
}
