/** headBlob, uploadBlob: the bytes of a version's files, addressed by digest. */
import type { Readable } from 'node:stream';
import type { RequestHandler } from 'express';
import { uploadBlob as storeBlob } from '../versions/blobs.ts';
import { type Context, paramsOf, principalOf, repositoryFor } from './context.ts';

export function headBlob(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await repositoryFor(ctx, res, 'write');
    const { digest } = paramsOf(res);
    // Only blobs this repository already uses: no probing for other teams' content.
    const file = await ctx.prisma.versionFile.findFirst({ where: { blobDigest: digest, version: { repositoryId: repo.id } } });
    if (!file) {
      res.status(404).end();
      return;
    }
    res.set('Content-Length', String(file.size)).set('ETag', `"${digest}"`).status(200).end();
  };
}

export function uploadBlob(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await repositoryFor(ctx, res, 'write');
    const { digest } = paramsOf(res);
    const length = req.get('content-length');
    const put = await storeBlob(ctx.prisma, ctx.blobs, req as Readable, {
      expectedDigest: digest,
      maxBytes: ctx.maxBlobBytes,
      ...(length === undefined ? {} : { expectedSize: Number(length) }),
    });
    ctx.log.info(
      { repo: `${repo.namespace}/${repo.name}`, digest: put.digest, size: put.size, created: put.created, user: principalOf(res)?.handle },
      'blob uploaded',
    );
    res.status(put.created ? 201 : 200).json({ digest: put.digest, size: put.size });
  };
}
