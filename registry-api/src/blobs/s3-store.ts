/**
 * Blobs in S3 (or any S3-compatible store): s3://<bucket>/<prefix>blobs/sha256/<hex>.
 * The upload is spooled to local disk first so its digest is known before it gets a key;
 * it is then sent with lib-storage (multipart for large blobs) carrying SHA-256 checksums
 * the server verifies, and with If-None-Match so an existing blob is never overwritten.
 */
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadBucketCommand,
  HeadObjectCommand,
  S3Client,
  type S3ClientConfig,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { LowrankError } from '@lowrank/crds/errors';
import { blobKey, HashingStream } from './digest.ts';
import { DirectUploads } from './direct-upload.ts';
import { spool } from './spool.ts';
import type { BlobStore, PutOptions, PutResult } from './store.ts';

export interface S3BlobStoreOptions {
  bucket: string;
  prefix?: string;
  client: S3ClientConfig;
  /** Where uploads are spooled before they are sent (default: the OS temp dir). */
  spoolDir?: string;
  /** Multipart part size (default 16 MiB) and parallel parts (default 4). */
  partSize?: number;
  queueSize?: number;
  /** The S3 endpoint as clients reach it, when it differs from the registry's (presigned URLs are signed for it). */
  publicEndpoint?: string;
  /** Direct uploads up to this size go in one S3-checked request (default 1 GiB; 0: always multipart). */
  singlePutMaxBytes?: number;
}

const status = (err: unknown) => (err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined);

export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  private readonly s3: S3Client;
  private readonly presigner: S3Client;
  private readonly options: S3BlobStoreOptions;
  readonly direct: DirectUploads;

  constructor(options: S3BlobStoreOptions) {
    this.options = options;
    // WHEN_REQUIRED: checksums only where we ask for them (some S3-compatible servers
    // mishandle the SDK's default aws-chunked framing; see shared/notes/feasibility.md §7).
    this.s3 = new S3Client({ requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED', ...options.client });
    this.presigner = options.publicEndpoint
      ? new S3Client({
          requestChecksumCalculation: 'WHEN_REQUIRED',
          responseChecksumValidation: 'WHEN_REQUIRED',
          ...options.client,
          endpoint: options.publicEndpoint,
        })
      : this.s3;
    this.direct = new DirectUploads(
      this.s3,
      this.presigner,
      options.bucket,
      options.prefix ?? '',
      (d) => this.key(d),
      options.singlePutMaxBytes,
    );
  }

  private key(digest: string): string {
    return `${this.options.prefix ?? ''}${blobKey(digest)}`;
  }

  /** Creates the bucket when it does not exist (local and test setups; production buckets exist). */
  async ensureBucket(): Promise<void> {
    try {
      await this.s3.send(new HeadBucketCommand({ Bucket: this.options.bucket }));
    } catch (err) {
      if (status(err) !== 404) throw err;
      await this.s3.send(new CreateBucketCommand({ Bucket: this.options.bucket }));
    }
  }

  async put(body: Readable | Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const tmp = await spool(body, this.options.spoolDir ?? join(tmpdir(), 'lowrank-spool'), options);
    try {
      if (await this.stat(tmp.digest)) return { digest: tmp.digest, size: tmp.size, created: false };
      const upload = new Upload({
        client: this.s3,
        partSize: this.options.partSize ?? 16 << 20,
        queueSize: this.options.queueSize ?? 4,
        leavePartsOnError: false, // a failed multipart upload is aborted, not left to bill
        params: {
          Bucket: this.options.bucket,
          Key: this.key(tmp.digest),
          Body: createReadStream(tmp.path),
          ContentType: 'application/octet-stream',
          ChecksumAlgorithm: 'SHA256',
          IfNoneMatch: '*',
        },
      });
      try {
        await upload.done();
      } catch (err) {
        // 412: someone stored the same content meanwhile; it is the same bytes by definition.
        if (status(err) === 412) return { digest: tmp.digest, size: tmp.size, created: false };
        throw err;
      }
      const stored = await this.stat(tmp.digest);
      if (stored?.size !== tmp.size) {
        throw new LowrankError(
          'unavailable',
          `S3 reports ${stored?.size ?? 'no'} bytes for ${tmp.digest} after uploading ${tmp.size}; retry the upload`,
        );
      }
      return { digest: tmp.digest, size: tmp.size, created: true };
    } finally {
      await tmp.discard();
    }
  }

  async get(digest: string): Promise<Readable> {
    let res: GetObjectCommandOutput;
    try {
      res = await this.s3.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest) }));
    } catch (err) {
      if (status(err) === 404) throw new LowrankError('not_found', `blob ${digest} not found`);
      throw err;
    }
    const verified = new HashingStream({ digest, ...(res.ContentLength === undefined ? {} : { size: res.ContentLength }) });
    pipeline(res.Body as Readable, verified).catch(() => {});
    return verified;
  }

  async getRange(digest: string, start: number, end: number): Promise<Readable> {
    try {
      const res = await this.s3.send(
        new GetObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest), Range: `bytes=${start}-${end}` }),
      );
      return res.Body as Readable;
    } catch (err) {
      if (status(err) === 404) throw new LowrankError('not_found', `blob ${digest} not found`);
      throw err;
    }
  }

  async stat(digest: string): Promise<{ size: number } | undefined> {
    try {
      const head = await this.s3.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest) }));
      return { size: head.ContentLength ?? 0 };
    } catch (err) {
      if (status(err) === 404) return undefined;
      throw err;
    }
  }

  async delete(digest: string): Promise<void> {
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest) }));
  }

  async presignGet(digest: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.presigner, new GetObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest) }), {
      expiresIn: expiresInSeconds,
    });
  }

  destroy(): void {
    this.s3.destroy();
    if (this.presigner !== this.s3) this.presigner.destroy();
  }
}
