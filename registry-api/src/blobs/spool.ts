/**
 * Receives an upload into a private temporary file while hashing it, so the content's
 * address is known, and checked against what the client claimed, before anything is
 * stored under that address. A failed or refused upload leaves no file behind.
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import { HashingStream, parseDigest } from './digest.ts';
import type { PutOptions } from './store.ts';

export interface Spooled {
  path: string;
  digest: string;
  size: number;
  discard(): Promise<void>;
}

function limit(maxBytes: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      seen += chunk.length;
      if (seen > maxBytes) cb(new LowrankError('payload_too_large', `blob is larger than the ${maxBytes}-byte limit`));
      else cb(null, chunk);
    },
  });
}

export async function spool(body: Readable | Uint8Array, dir: string, options: PutOptions = {}): Promise<Spooled> {
  if (options.expectedDigest !== undefined) parseDigest(options.expectedDigest);
  await mkdir(dir, { recursive: true });
  const path = join(dir, `upload-${randomUUID()}`);
  const discard = () => unlink(path).catch(() => {});
  const hashing = new HashingStream();
  const source = body instanceof Uint8Array ? Readable.from([Buffer.from(body.buffer, body.byteOffset, body.byteLength)]) : body;
  const stages: (Readable | Transform)[] = [source];
  if (options.maxBytes !== undefined) stages.push(limit(options.maxBytes));
  try {
    await pipeline(...(stages as [Readable]), hashing, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
    const fh = await open(path, 'r');
    await fh.sync(); // the bytes are on disk before they get a name
    await fh.close();
  } catch (err) {
    await discard();
    throw err;
  }
  const { digest, bytes: size } = hashing;
  if (options.expectedSize !== undefined && size !== options.expectedSize) {
    await discard();
    throw new LowrankError(
      'invalid_file',
      `upload has ${size} bytes but ${options.expectedSize} were announced; nothing was stored, retry the upload`,
    );
  }
  if (options.expectedDigest !== undefined && digest !== options.expectedDigest) {
    await discard();
    throw new LowrankError(
      'invalid_file',
      `upload hashes to ${digest}, not ${options.expectedDigest} as announced; nothing was stored, retry the upload`,
    );
  }
  return { path, digest, size, discard };
}
