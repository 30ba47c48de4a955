/**
 * Content addresses: `sha256:<64 hex>`, stored under `blobs/sha256/<hex>`. A stream
 * transform hashes and counts what flows through it, and can check the result at the end.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { LowrankError } from '@lowrank/crds/errors';

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function parseDigest(digest: string): string {
  if (typeof digest !== 'string' || !DIGEST_RE.test(digest)) {
    throw new LowrankError(
      'invalid_request',
      `"${String(digest).slice(0, 80)}" is not a blob digest; expected sha256:<64 lowercase hex digits>`,
    );
  }
  return digest.slice('sha256:'.length);
}

export const blobKey = (digest: string) => `blobs/sha256/${parseDigest(digest)}`;

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Passes bytes through unchanged while hashing and counting them. */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  private result?: string;

  /** When set, the stream fails at its end unless the content has this digest and size. */
  private readonly expect: { digest: string; size?: number } | undefined;

  constructor(expect?: { digest: string; size?: number }) {
    super();
    this.expect = expect;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.result = `sha256:${this.hash.digest('hex')}`;
    if (this.expect && (this.result !== this.expect.digest || (this.expect.size !== undefined && this.bytes !== this.expect.size))) {
      cb(
        new LowrankError(
          'internal',
          `blob ${this.expect.digest} is corrupt in storage: read ${this.bytes} bytes with digest ${this.result}; restore it from a replica or re-push the version`,
        ),
      );
      return;
    }
    cb();
  }

  get digest(): string {
    if (!this.result) throw new Error('digest read before the stream ended');
    return this.result;
  }
}
