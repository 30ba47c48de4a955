/**
 * Direct uploads to S3 (the registry signs, the client sends the bytes). Parts go to
 * presigned URLs that carry each part's SHA-256 (S3 refuses a part whose bytes differ),
 * and the completed object is hashed once by the registry before anything trusts it:
 *   - a blob not stored yet is uploaded straight to its content address; completion is
 *     conditional (If-None-Match: *), so it never overwrites a stored blob, and content
 *     without the claimed digest and size is deleted at once;
 *   - a blob already stored (for another repository) is uploaded to a staging key,
 *     verified, and dropped: the client proves it has the bytes before it may reference
 *     them, and the answer looks the same either way, so nothing leaks whether it existed.
 * The caller holds the digest's lock across complete(). Parts already uploaded are
 * listed, so an interrupted upload resumes where it stopped.
 *
 * Blobs up to `singlePutMaxBytes` go in one request instead, checked by S3 itself
 * (single-put.ts), when the store is one that checks checksums.
 */
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListPartsCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { LowrankError } from '@lowrank/crds/errors';
import { HashingStream } from './digest.ts';
import { SINGLE_PUT, SinglePuts } from './single-put.ts';

/** S3's largest single-request copy (and PUT). */
const MAX_COPY = 5 * 2 ** 30;
/**
 * One request up to 1 GiB: S3 checks it whole, so nothing is read back; an interrupted
 * one is sent again from the start, which the parts of a multipart upload avoid.
 */
const DEFAULT_SINGLE_PUT_MAX = 2 ** 30;

export interface UploadedPart {
  number: number;
  size: number;
  etag: string;
  /** Base64 SHA-256 S3 checked the part against. */
  sha256?: string;
}

export class DirectUploads {
  readonly #s3: S3Client;
  readonly #presigner: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #keyOf: (digest: string) => string;
  readonly single: SinglePuts;
  /** Blobs up to this size are sent in one request (S3's limit for one PUT is 5 GiB); 0: always multipart. */
  readonly singlePutMaxBytes: number;

  constructor(
    s3: S3Client,
    presigner: S3Client,
    bucket: string,
    prefix: string,
    keyOf: (digest: string) => string,
    singlePutMaxBytes = DEFAULT_SINGLE_PUT_MAX,
  ) {
    this.#s3 = s3;
    this.#presigner = presigner;
    this.#bucket = bucket;
    this.#prefix = prefix;
    this.#keyOf = keyOf;
    this.single = new SinglePuts(s3, presigner, bucket, prefix);
    this.singlePutMaxBytes = Math.min(singlePutMaxBytes, MAX_COPY);
  }

  /** Where a new session's bytes go: the blob's address for one request, or a multipart upload. */
  async create(digest: string, size: number): Promise<{ key: string; uploadId: string }> {
    if (size <= this.singlePutMaxBytes && (await this.single.verifiesChecksums()))
      return { key: this.#keyOf(digest), uploadId: SINGLE_PUT };
    const key = (await this.#exists(this.#keyOf(digest))) ? `${this.#prefix}uploads/${randomUUID()}` : this.#keyOf(digest);
    const res = await this.#s3.send(
      new CreateMultipartUploadCommand({
        Bucket: this.#bucket,
        Key: key,
        ContentType: 'application/octet-stream',
        ChecksumAlgorithm: 'SHA256',
      }),
    );
    if (!res.UploadId) throw new LowrankError('unavailable', 'S3 did not start the multipart upload; retry');
    return { key, uploadId: res.UploadId };
  }

  /** A PUT URL for one part; the client must send header x-amz-checksum-sha256 = sha256 (base64). */
  async presignPart(key: string, uploadId: string, number: number, sha256: string, expiresIn: number): Promise<string> {
    return getSignedUrl(
      this.#presigner,
      new UploadPartCommand({ Bucket: this.#bucket, Key: key, UploadId: uploadId, PartNumber: number, ChecksumSHA256: sha256 }),
      { expiresIn, unhoistableHeaders: new Set(['x-amz-checksum-sha256']) },
    );
  }

  async parts(key: string, uploadId: string): Promise<UploadedPart[]> {
    if (uploadId === SINGLE_PUT) return []; // sent again whole; a HEAD would tell whether the blob exists
    const out: UploadedPart[] = [];
    let marker: string | undefined;
    do {
      const res = await this.#s3.send(
        new ListPartsCommand({ Bucket: this.#bucket, Key: key, UploadId: uploadId, ...(marker ? { PartNumberMarker: marker } : {}) }),
      );
      for (const p of res.Parts ?? [])
        out.push({
          number: p.PartNumber ?? 0,
          size: p.Size ?? 0,
          etag: p.ETag ?? '',
          ...(p.ChecksumSHA256 ? { sha256: p.ChecksumSHA256 } : {}),
        });
      marker = res.IsTruncated ? res.NextPartNumberMarker : undefined;
    } while (marker);
    return out;
  }

  /** Drops a multipart upload's parts; an object at the key (a stored blob, maybe) is never touched. */
  async abort(key: string, uploadId: string): Promise<void> {
    if (uploadId === SINGLE_PUT) throw new LowrankError('internal', 'a single-request upload is dropped by abortSession');
    await this.#s3.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: key, UploadId: uploadId })).catch(() => {});
  }

  /**
   * Completes the upload and verifies it: 'stored' (the blob is at its content address
   * now, or already was and the client's copy matched), or 'mismatch' (nothing kept).
   * Throws a conflict when another upload stored the blob meanwhile: start again.
   * Hold the digest's lock.
   */
  async complete(key: string, uploadId: string, expect: { digest: string; size: number }): Promise<'stored' | 'mismatch'> {
    const parts = (await this.parts(key, uploadId)).sort((a, b) => a.number - b.number);
    if (parts.length === 0) throw new LowrankError('invalid_request', 'no parts were uploaded; upload them before completing');
    const finalKey = this.#keyOf(expect.digest);
    const staged = key !== finalKey;
    try {
      await this.#s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.#bucket,
          Key: key,
          UploadId: uploadId,
          ...(staged ? {} : { IfNoneMatch: '*' }),
          MultipartUpload: {
            Parts: parts.map((p) => ({ PartNumber: p.number, ETag: p.etag, ...(p.sha256 ? { ChecksumSHA256: p.sha256 } : {}) })),
          },
        }),
      );
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 412) throw err;
      await this.abort(key, uploadId);
      throw new LowrankError(
        'conflict',
        `another upload stored ${expect.digest} meanwhile; start the upload again (POST .../uploads) to finish it`,
      );
    }
    let ok = false;
    try {
      const hashing = new HashingStream();
      const body = (await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }))).Body as Readable;
      await pipeline(body, hashing, async (source) => {
        for await (const _ of source);
      });
      ok = hashing.digest === expect.digest && hashing.bytes === expect.size;
      // Collected since the session started: the verified copy takes its place.
      if (ok && staged && !(await this.#exists(finalKey))) {
        if (expect.size > MAX_COPY)
          throw new LowrankError('unavailable', `${expect.digest} was collected during the upload; upload it again`);
        await this.#s3.send(new CopyObjectCommand({ Bucket: this.#bucket, Key: finalKey, CopySource: `${this.#bucket}/${key}` }));
      }
    } finally {
      // A staging copy always goes; at the content address, only what failed (nothing was there before: If-None-Match).
      if (staged || !ok) await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
    }
    return ok ? 'stored' : 'mismatch';
  }

  async #exists(key: string): Promise<boolean> {
    try {
      await this.#s3.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
      return true;
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
      throw err;
    }
  }
}
