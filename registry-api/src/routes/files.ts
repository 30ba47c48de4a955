/**
 * downloadFile: a version's file, with ETag (its digest), If-None-Match and single Range
 * requests. With ?direct=1 and an S3 store the answer is a 307 to a presigned URL, so the
 * bytes come straight from S3 (the client, e.g. `lora pull`, verifies the digest given in
 * X-Linked-Etag); otherwise the registry streams and verifies them.
 */
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import { type Context, paramsOf, repositoryFor } from './context.ts';
import { resolveVersion } from './versions.ts';

/** Long enough for a slow multi-GiB download to start; the URL is per request. */
const DIRECT_URL_SECONDS = 900;

export function downloadFile(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await repositoryFor(ctx, res, 'read');
    const { ref, path } = paramsOf(res);
    const version = await resolveVersion(ctx, repo, ref as string);
    const file = version.files.find((f) => f.path === path);
    if (!file) throw new LowrankError('not_found', `${repo.namespace}/${repo.name}@${version.number} has no file "${path}"`);
    const size = Number(file.size);
    const etag = `"${file.blobDigest}"`;
    res.set({
      ETag: etag,
      'Accept-Ranges': 'bytes',
      'Content-Type': 'application/octet-stream',
      'Cache-Control': 'private, max-age=31536000, immutable',
    });
    if (req.get('if-none-match') === etag) {
      res.status(304).end();
      return;
    }
    if (req.query.direct === '1' && ctx.blobs.presignGet && req.method === 'GET' && !req.get('range')) {
      res.set({ 'X-Linked-Etag': file.blobDigest, 'X-Linked-Size': String(size), 'Cache-Control': 'no-store' });
      res.redirect(307, await ctx.blobs.presignGet(file.blobDigest, DIRECT_URL_SECONDS));
      return;
    }
    const range = req.get('range');
    if (range) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range);
      let start = m?.[1] ? Number(m[1]) : Number.NaN;
      let end = m?.[2] ? Number(m[2]) : size - 1;
      if (m && !m[1] && m[2]) {
        start = Math.max(0, size - Number(m[2])); // suffix range: the last N bytes
        end = size - 1;
      }
      end = Math.min(end, size - 1);
      if (!m || Number.isNaN(start) || start > end || start >= size) {
        res.status(416).set('Content-Range', `bytes */${size}`).type('application/problem+json');
        res.send(JSON.stringify(new LowrankError('invalid_request', `range "${range}" is not satisfiable for ${size} bytes`).toProblem()));
        return;
      }
      res.status(206).set({ 'Content-Range': `bytes ${start}-${end}/${size}`, 'Content-Length': String(end - start + 1) });
      await pipeline(await ctx.blobs.getRange(file.blobDigest, start, end), res);
      return;
    }
    res.status(200).set('Content-Length', String(size));
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    await pipeline(await ctx.blobs.get(file.blobDigest), res);
  };
}
