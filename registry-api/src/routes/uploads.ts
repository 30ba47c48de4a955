/**
 * Direct upload sessions (like OCI distribution's, but the bytes go to S3): startUpload
 * opens or resumes the session for a digest, presignUploadParts signs part URLs (each
 * carrying its part's SHA-256), completeUpload verifies the whole blob and records it,
 * abortUpload gives up. On a filesystem store the answer says to PUT the blob instead.
 * A session of mode `single` has one part, the whole blob, which S3 checks against the
 * digest as it arrives (blobs/single-put.ts); `multipart` sessions are hashed on completion.
 */
import { randomUUID } from 'node:crypto';
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler, Response } from 'express';
import { checksumOf, SINGLE_PUT } from '../blobs/single-put.ts';
import type { Repository, UploadSession } from '../generated/prisma/client.ts';
import { abortSession, lockDigest, recordLocked } from '../versions/blobs.ts';
import { type Context, paramsOf, principalOf, repositoryFor } from './context.ts';

const MIN_PART = 16 * 2 ** 20;
const MAX_PARTS = 10_000;
const URL_SECONDS = 3600;
/** Hashing a 20 GiB blob back from S3 takes minutes; the transaction holding its lock must outlive it. */
const VERIFY_TIMEOUT_MS = 30 * 60_000;

const partSizeFor = (size: number) => Math.max(MIN_PART, Math.ceil(size / MAX_PARTS / 2 ** 20) * 2 ** 20);

async function sessionView(ctx: Context, repo: Repository, s: UploadSession) {
  const size = Number(s.size);
  const uploaded = await (ctx.blobs.direct as NonNullable<typeof ctx.blobs.direct>).parts(s.key, s.uploadId);
  return {
    id: s.id,
    state: 'open' as const,
    mode: s.uploadId === SINGLE_PUT ? ('single' as const) : ('multipart' as const),
    digest: s.digest,
    size,
    partSize: s.partSize,
    partCount: Math.max(1, Math.ceil(size / s.partSize)),
    uploadedParts: uploaded.map((p) => ({ number: p.number, size: p.size })),
    location: `/v1/repos/${repo.namespace}/${repo.name}/uploads/${s.id}`,
  };
}

async function sessionFor(ctx: Context, res: Response): Promise<{ repo: Repository; session: UploadSession }> {
  const repo = await repositoryFor(ctx, res, 'write');
  if (!ctx.blobs.direct)
    throw new LowrankError('not_found', 'this registry stores blobs on its filesystem: PUT them to .../blobs/{digest}');
  const session = await ctx.prisma.uploadSession.findFirst({ where: { id: paramsOf(res).id as string, repositoryId: repo.id } });
  if (!session)
    throw new LowrankError('not_found', `upload ${paramsOf(res).id} not found (completed, aborted or expired): start a new one`);
  return { repo, session };
}

export function startUpload(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await repositoryFor(ctx, res, 'write');
    const { digest, size } = req.body as { digest: string; size: number };
    if (size > ctx.maxBlobBytes)
      throw new LowrankError('payload_too_large', `blobs are limited to ${ctx.maxBlobBytes} bytes; ${digest} has ${size}`);
    const blobPath = `/v1/repos/${repo.namespace}/${repo.name}/blobs/${digest}`;
    if (!ctx.blobs.direct) {
      res.status(200).json({ state: 'proxy', digest, size, location: blobPath });
      return;
    }
    // Only this repository's own blobs count as present: no probing for other teams' content.
    const has = await ctx.prisma.versionFile.findFirst({ where: { blobDigest: digest, version: { repositoryId: repo.id } } });
    if (has) {
      res.status(200).json({ state: 'exists', digest, size, location: blobPath });
      return;
    }
    const open = await ctx.prisma.uploadSession.findUnique({ where: { repositoryId_digest: { repositoryId: repo.id, digest } } });
    if (open && Number(open.size) === size) {
      res.status(200).json(await sessionView(ctx, repo, open));
      return;
    }
    if (open) {
      await abortSession(ctx.prisma, ctx.blobs, open);
      await ctx.prisma.uploadSession.delete({ where: { id: open.id } });
    }
    const { key, uploadId } = await ctx.blobs.direct.create(digest, size);
    const single = uploadId === SINGLE_PUT;
    const session = await ctx.prisma.uploadSession
      .create({
        data: {
          id: randomUUID(),
          repositoryId: repo.id,
          digest,
          size: BigInt(size),
          key,
          uploadId,
          partSize: single ? size : partSizeFor(size),
          createdById: principalOf(res)?.userId ?? null,
        },
      })
      .catch(async (err: unknown) => {
        if (!single) await ctx.blobs.direct?.abort(key, uploadId);
        throw new LowrankError('conflict', `another upload of ${digest} started at the same moment; start again to resume it`, {
          cause: err,
        });
      });
    res
      .status(201)
      .location(`/v1/repos/${repo.namespace}/${repo.name}/uploads/${session.id}`)
      .json(await sessionView(ctx, repo, session));
  };
}

export function presignUploadParts(ctx: Context): RequestHandler {
  return async (req, res) => {
    const { session } = await sessionFor(ctx, res);
    const partCount = Math.max(1, Math.ceil(Number(session.size) / session.partSize));
    const { parts } = req.body as { parts: { number: number; sha256: string }[] };
    const bad = parts.filter((p) => p.number > partCount);
    if (bad.length > 0)
      throw new LowrankError('invalid_request', `the upload has parts 1 to ${partCount}`, {
        errors: bad.map((p) => ({ path: 'body.parts.number', message: `part ${p.number} is past the last part (${partCount})` })),
      });
    const direct = ctx.blobs.direct as NonNullable<typeof ctx.blobs.direct>;
    if (session.uploadId === SINGLE_PUT) {
      const checksum = checksumOf(session.digest);
      const wrong = parts.filter((p) => p.sha256 !== checksum);
      if (wrong.length > 0)
        throw new LowrankError(
          'invalid_request',
          `this upload sends the whole blob in one request (mode single): part 1's sha256 must be the session's digest, ${checksum} in base64`,
          { errors: wrong.map(() => ({ path: 'body.parts.sha256', message: `must be ${checksum}` })) },
        );
      const put = await direct.single.presign(session.key, session.id, session.digest, URL_SECONDS);
      res.json({ expiresInSeconds: URL_SECONDS, parts: [{ number: 1, ...put }] });
      return;
    }
    const urls = await Promise.all(
      parts.map(async (p) => ({
        number: p.number,
        url: await direct.presignPart(session.key, session.uploadId, p.number, p.sha256, URL_SECONDS),
        headers: { 'x-amz-checksum-sha256': p.sha256 },
      })),
    );
    res.json({ expiresInSeconds: URL_SECONDS, parts: urls });
  };
}

export function completeUpload(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const { repo, session } = await sessionFor(ctx, res);
    const direct = ctx.blobs.direct as NonNullable<typeof ctx.blobs.direct>;
    const size = Number(session.size);
    if (session.uploadId === SINGLE_PUT) return completeSingle(ctx, res, repo, session);
    const uploaded = await direct.parts(session.key, session.uploadId);
    const have = uploaded.reduce((n, p) => n + p.size, 0);
    if (have !== size)
      throw new LowrankError(
        'invalid_file',
        `${uploaded.length} parts with ${have} of ${size} bytes are uploaded; upload the rest (GET the session to see which) and complete again`,
      );
    // Under the digest's lock: GC, other uploads and commits of this digest wait for the verdict.
    const outcome = await ctx.prisma
      .$transaction(
        async (tx) => {
          await lockDigest(tx, session.digest);
          const result = await direct.complete(session.key, session.uploadId, { digest: session.digest, size });
          if (result === 'stored') await recordLocked(tx, ctx.blobs, session.digest, size);
          return result;
        },
        { timeout: VERIFY_TIMEOUT_MS, maxWait: 60_000 },
      )
      .finally(() => ctx.prisma.uploadSession.delete({ where: { id: session.id } }).catch(() => {}));
    if (outcome === 'mismatch')
      throw new LowrankError(
        'invalid_file',
        `the uploaded bytes do not hash to ${session.digest}; nothing was stored, upload the file again`,
      );
    ctx.log.info(
      { repo: `${repo.namespace}/${repo.name}`, digest: session.digest, size, user: principalOf(res)?.handle },
      'blob uploaded directly',
    );
    res.status(201).json({ digest: session.digest, size });
  };
}

/** A single-request upload: a HEAD under the digest's lock, since S3 checked the bytes as they arrived. */
async function completeSingle(ctx: Context, res: Response, repo: Repository, session: UploadSession): Promise<void> {
  const direct = ctx.blobs.direct as NonNullable<typeof ctx.blobs.direct>;
  const size = Number(session.size);
  const outcome = await ctx.prisma.$transaction(
    async (tx) => {
      await lockDigest(tx, session.digest);
      const result = await direct.single.verify(session.key, session.id, { digest: session.digest, size });
      if (result === 'stored') await recordLocked(tx, ctx.blobs, session.digest, size);
      return result;
    },
    { timeout: VERIFY_TIMEOUT_MS, maxWait: 60_000 }, // a store without stored checksums is read back
  );
  if (outcome === 'missing')
    throw new LowrankError(
      'invalid_file',
      'S3 holds nothing from this session (not sent yet, or another upload of the same bytes replaced it): PUT the file to the URL from .../parts with its headers, then complete again',
    );
  await ctx.prisma.uploadSession.delete({ where: { id: session.id } }).catch(() => {});
  ctx.log.info(
    { repo: `${repo.namespace}/${repo.name}`, digest: session.digest, size, user: principalOf(res)?.handle, mode: 'single' },
    'blob uploaded directly',
  );
  res.status(201).json({ digest: session.digest, size });
}

export function getUpload(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const { repo, session } = await sessionFor(ctx, res);
    res.json(await sessionView(ctx, repo, session));
  };
}

export function abortUpload(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const { session } = await sessionFor(ctx, res);
    await abortSession(ctx.prisma, ctx.blobs, session);
    await ctx.prisma.uploadSession.delete({ where: { id: session.id } });
    res.status(204).end();
  };
}
