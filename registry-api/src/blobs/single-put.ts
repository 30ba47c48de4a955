/**
 * Direct uploads in one request, checked by S3 instead of read back. The client PUTs the
 * whole blob to its content address through a presigned URL that signs two headers:
 *   - x-amz-checksum-sha256 = the blob's digest: S3 computes the SHA-256 of the bytes it
 *     receives and refuses the request when they differ, so the address only ever holds
 *     the bytes it names (a PUT of the same bytes over a stored blob changes nothing);
 *   - x-amz-meta-lowrank-upload = the session id: a HEAD proves that this session sent
 *     the bytes there, so knowing a stored digest is not enough to reference it (proof of
 *     possession), and nothing in the answers tells whether the blob existed before.
 * Completion is then a HEAD, not a second pass over the bytes. S3 stores that do not
 * check checksums are detected by a probe and get multipart uploads, hashed on completion.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { LowrankError } from '@lowrank/crds/errors';
import { HashingStream } from './digest.ts';

/** Upload sessions in one request carry this instead of an S3 multipart upload id. */
export const SINGLE_PUT = '';
const SESSION_META = 'lowrank-upload';
const MISMATCH = new Set(['BadDigest', 'XAmzContentChecksumMismatch', 'InvalidDigest']);

/** "sha256:<hex>" as the base64 S3 uses in x-amz-checksum-sha256. */
export const checksumOf = (digest: string) => Buffer.from(digest.slice('sha256:'.length), 'hex').toString('base64');

const status = (err: unknown) => (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;

export class SinglePuts {
  readonly #s3: S3Client;
  readonly #presigner: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  #verifies: Promise<boolean> | undefined;

  constructor(s3: S3Client, presigner: S3Client, bucket: string, prefix: string) {
    this.#s3 = s3;
    this.#presigner = presigner;
    this.#bucket = bucket;
    this.#prefix = prefix;
  }

  /**
   * Whether the store refuses a body whose SHA-256 differs from its x-amz-checksum-sha256
   * (AWS S3 and MinIO do). Asked once per process: one tiny PUT that must fail.
   */
  verifiesChecksums(): Promise<boolean> {
    this.#verifies ??= (async () => {
      const Key = `${this.#prefix}uploads/checksum-probe-${randomUUID()}`;
      const wrong = Buffer.from(randomBytes(32)).toString('base64');
      try {
        await this.#s3.send(new PutObjectCommand({ Bucket: this.#bucket, Key, Body: Buffer.from('probe'), ChecksumSHA256: wrong }));
      } catch (err) {
        // The codes AWS S3 and MinIO give for a body that is not its checksum.
        if (MISMATCH.has((err as { name?: string }).name ?? '')) return true;
        // 4xx: a store that does not take the header at all, so it checks nothing.
        if ((status(err) ?? 500) < 500) return false;
        this.#verifies = undefined; // unreachable or failing: ask again next time
        throw err;
      }
      await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key }));
      return false;
    })();
    return this.#verifies;
  }

  /** The presigned PUT for a session's whole blob, and the headers the client must send with it. */
  async presign(
    key: string,
    sessionId: string,
    digest: string,
    expiresIn: number,
  ): Promise<{ url: string; headers: Record<string, string> }> {
    const checksum = checksumOf(digest);
    const url = await getSignedUrl(
      this.#presigner,
      new PutObjectCommand({
        Bucket: this.#bucket,
        Key: key,
        ContentType: 'application/octet-stream',
        ChecksumSHA256: checksum,
        Metadata: { [SESSION_META]: sessionId },
      }),
      { expiresIn, unhoistableHeaders: new Set(['x-amz-checksum-sha256', `x-amz-meta-${SESSION_META}`, 'content-type']) },
    );
    return {
      url,
      headers: {
        'x-amz-checksum-sha256': checksum,
        [`x-amz-meta-${SESSION_META}`]: sessionId,
        'content-type': 'application/octet-stream',
      },
    };
  }

  /**
   * 'stored' when this session's PUT put the claimed bytes at the key, 'missing' when it
   * did not (nothing sent, or another session's PUT of the same bytes came last: send
   * again). Hold the digest's lock.
   */
  async verify(key: string, sessionId: string, expect: { digest: string; size: number }): Promise<'stored' | 'missing'> {
    const head = await this.#head(key);
    if (!head || head.Metadata?.[SESSION_META] !== sessionId) return 'missing';
    if (head.ContentLength !== expect.size)
      throw new LowrankError('internal', `S3 holds ${head.ContentLength} bytes at ${key}, the session ${expect.size}`);
    if (head.ChecksumSHA256 === checksumOf(expect.digest)) return 'stored';
    // A store that kept no checksum (it was probed as verifying, so this is unexpected): hash the bytes.
    const hashing = new HashingStream();
    const body = (await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }))).Body as Readable;
    await pipeline(body, hashing, async (source) => {
      for await (const _ of source);
    });
    if (hashing.digest === expect.digest && hashing.bytes === expect.size) return 'stored';
    throw new LowrankError('internal', `S3 stored bytes that are not ${expect.digest} at ${key}; its checksum checks are broken`);
  }

  /** Deletes what this session sent, unless another PUT has replaced it since. Hold the digest's lock. */
  async drop(key: string, sessionId: string): Promise<void> {
    const head = await this.#head(key);
    if (head?.Metadata?.[SESSION_META] === sessionId) await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
  }

  async #head(key: string) {
    try {
      return await this.#s3.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key, ChecksumMode: 'ENABLED' }));
    } catch (err) {
      if (status(err) === 404) return undefined;
      throw err;
    }
  }
}
