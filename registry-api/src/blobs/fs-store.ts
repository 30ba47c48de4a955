/**
 * Blobs on the local filesystem (the embedded default): <root>/blobs/sha256/<hex>.
 * Writes land by rename from <root>/tmp (same filesystem, so atomic), and a blob is
 * never overwritten once present.
 */
import { createReadStream } from 'node:fs';
import { link, mkdir, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import { blobKey, HashingStream } from './digest.ts';
import { spool } from './spool.ts';
import type { BlobStore, PutOptions, PutResult } from './store.ts';

export class FilesystemBlobStore implements BlobStore {
  readonly kind = 'filesystem' as const;

  private readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  private path(digest: string): string {
    return join(this.root, blobKey(digest));
  }

  async put(body: Readable | Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const tmp = await spool(body, join(this.root, 'tmp'), options);
    const target = this.path(tmp.digest);
    await mkdir(dirname(target), { recursive: true });
    try {
      // link(2) fails if the target exists: concurrent puts of the same content are safe.
      await link(tmp.path, target);
      return { digest: tmp.digest, size: tmp.size, created: true };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { digest: tmp.digest, size: tmp.size, created: false };
      throw err;
    } finally {
      await tmp.discard();
    }
  }

  async get(digest: string): Promise<Readable> {
    const size = (await this.stat(digest))?.size;
    if (size === undefined) throw new LowrankError('not_found', `blob ${digest} not found`);
    const verified = new HashingStream({ digest, size });
    // pipeline destroys `verified` with any read error, so the consumer sees it.
    pipeline(createReadStream(this.path(digest)), verified).catch(() => {});
    return verified;
  }

  async getRange(digest: string, start: number, end: number): Promise<Readable> {
    if (!(await this.stat(digest))) throw new LowrankError('not_found', `blob ${digest} not found`);
    return createReadStream(this.path(digest), { start, end });
  }

  async stat(digest: string): Promise<{ size: number } | undefined> {
    try {
      return { size: (await stat(this.path(digest))).size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async delete(digest: string): Promise<void> {
    await unlink(this.path(digest)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}
