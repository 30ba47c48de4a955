/**
 * downloadArchive: a whole version as one tar (a PEFT directory: `tar -xf` it and load it),
 * streamed file by file from the blob store, each verified against its digest as it
 * streams; a blob found corrupt aborts the response, so a client never gets a complete-
 * looking archive with wrong bytes.
 */
import { pipeline } from 'node:stream/promises';
import type { RequestHandler } from 'express';
import { pack } from 'tar-stream';
import { type Context, paramsOf, repositoryFor } from './context.ts';
import { resolveVersion } from './versions.ts';

const BLOCK = 512;
const padded = (n: number) => Math.ceil(n / BLOCK) * BLOCK;

export function downloadArchive(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await repositoryFor(ctx, res, 'read');
    const version = await resolveVersion(ctx, repo, paramsOf(res).ref as string);
    const files = [...version.files].sort((a, b) => a.path.localeCompare(b.path));
    const name = `${repo.namespace}-${repo.name}-v${version.number}`;
    res.set({
      'Content-Type': 'application/x-tar',
      'Content-Disposition': `attachment; filename="${name}.tar"`,
      'X-Repo-Commit': String(version.number),
      'Cache-Control': 'private, max-age=31536000, immutable',
    });
    // ustar headers fit paths up to 100 bytes; longer ones get pax headers of varying size.
    if (files.every((f) => Buffer.byteLength(f.path) <= 100))
      res.set('Content-Length', String(files.reduce((n, f) => n + BLOCK + padded(Number(f.size)), 0) + 2 * BLOCK));
    const tar = pack();
    // Settled here so a client that leaves mid-download is an expected end, never an unhandled rejection.
    let clientGone = false;
    const piping = pipeline(tar, res).then(
      () => undefined,
      () => {
        clientGone = true;
      },
    );
    try {
      for (const f of files) {
        if (clientGone) break;
        const blob = await ctx.blobs.get(f.blobDigest);
        const entry = tar.entry({ name: f.path, size: Number(f.size), mode: 0o644, mtime: version.createdAt });
        // A client leaving destroys the pack and with it this entry, possibly before pipeline() listens:
        // the cut is handled through `piping`, so the entry's own error needs no second report.
        entry.on('error', () => {});
        await pipeline(blob, entry);
      }
      if (!clientGone) tar.finalize();
    } catch (err) {
      if (!clientGone) ctx.log.error({ err, version: `${repo.namespace}/${repo.name}@${version.number}` }, 'archive aborted');
      // Destroyed without an error object: nobody listens any more, and the cut connection is the signal.
      tar.destroy();
      if (!res.destroyed) res.destroy();
    }
    await piping;
  };
}
