/**
 * Direct uploads to S3 (the registry signs, the client sends the bytes): a multipart
 * upload to a staging key, parts sent by the client to presigned URLs that carry each
 * part's SHA-256 (S3 refuses a part whose bytes differ), and on completion the whole
 * object is hashed once by the registry: only content with the claimed digest and size is
 * copied to its content address; anything else is deleted. Parts already uploaded are
 * listed, so an interrupted upload resumes where it stopped.
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
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { LowrankError } from '@lowrank/crds/errors';
import { HashingStream } from './digest.ts';

/** S3's largest single-request copy; bigger objects are copied part by part. */
const MAX_COPY = 5 * 2 ** 30;
const COPY_PART = 2 ** 30;

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

  constructor(s3: S3Client, presigner: S3Client, bucket: string, prefix: string, keyOf: (digest: string) => string) {
    this.#s3 = s3;
    this.#presigner = presigner;
    this.#bucket = bucket;
    this.#prefix = prefix;
    this.#keyOf = keyOf;
  }

  async create(): Promise<{ key: string; uploadId: string }> {
    const key = `${this.#prefix}uploads/${randomUUID()}`;
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

  async abort(key: string, uploadId: string): Promise<void> {
    await this.#s3.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: key, UploadId: uploadId })).catch(() => {});
    await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key })).catch(() => {});
  }

  /**
   * Completes the upload with the parts S3 holds, hashes the object, and promotes it to
   * the blob's content address when it has the expected digest and size. Returns false
   * (nothing kept) when it does not.
   */
  async complete(key: string, uploadId: string, expect: { digest: string; size: number }): Promise<boolean> {
    const parts = (await this.parts(key, uploadId)).sort((a, b) => a.number - b.number);
    if (parts.length === 0) throw new LowrankError('invalid_request', 'no parts were uploaded; upload them before completing');
    const finalKey = this.#keyOf(expect.digest);
    await this.#s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.#bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: {
          Parts: parts.map((p) => ({ PartNumber: p.number, ETag: p.etag, ...(p.sha256 ? { ChecksumSHA256: p.sha256 } : {}) })),
        },
      }),
    );
    try {
      const hashing = new HashingStream();
      const body = (await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }))).Body as Readable;
      await pipeline(body, hashing, async (source) => {
        for await (const _ of source);
      });
      if (hashing.digest !== expect.digest || hashing.bytes !== expect.size) return false;
      if (!(await this.#exists(finalKey))) await this.#copy(key, finalKey, expect.size);
      return true;
    } finally {
      await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key })).catch(() => {});
    }
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

  async #copy(from: string, to: string, size: number): Promise<void> {
    const source = `${this.#bucket}/${from}`;
    if (size <= MAX_COPY) {
      await this.#s3.send(
        new CopyObjectCommand({ Bucket: this.#bucket, Key: to, CopySource: source, ContentType: 'application/octet-stream' }),
      );
      return;
    }
    const { UploadId } = await this.#s3.send(
      new CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: to, ContentType: 'application/octet-stream' }),
    );
    const parts = [];
    try {
      for (let start = 0, n = 1; start < size; start += COPY_PART, n++) {
        const end = Math.min(size, start + COPY_PART) - 1;
        const r = await this.#s3.send(
          new UploadPartCopyCommand({
            Bucket: this.#bucket,
            Key: to,
            UploadId,
            PartNumber: n,
            CopySource: source,
            CopySourceRange: `bytes=${start}-${end}`,
          }),
        );
        parts.push({ PartNumber: n, ETag: r.CopyPartResult?.ETag });
      }
      await this.#s3.send(
        new CompleteMultipartUploadCommand({ Bucket: this.#bucket, Key: to, UploadId, MultipartUpload: { Parts: parts } }),
      );
    } catch (err) {
      await this.#s3.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: to, UploadId })).catch(() => {});
      throw err;
    }
  }
}
