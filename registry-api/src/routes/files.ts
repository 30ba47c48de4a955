/** downloadFile: a version's file, with ETag (its digest), If-None-Match and single Range requests. */
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import { type Context, paramsOf, repositoryFor } from './context.ts';
import { resolveVersion } from './versions.ts';

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
