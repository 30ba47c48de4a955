/** A fresh bucket on the test MinIO, with a raw client to look behind the store's back. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { serviceEnv } from '@lowrank/e2e/env';
import { S3BlobStore } from '../../src/blobs/s3-store.ts';

export function s3Config(): S3ClientConfig {
  return {
    endpoint: serviceEnv('S3_ENDPOINT'),
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: serviceEnv('S3_ACCESS_KEY_ID'), secretAccessKey: serviceEnv('S3_SECRET_ACCESS_KEY') },
  };
}

export async function freshBucket(
  prefix = '',
  options: { singlePutMaxBytes?: number } = {},
): Promise<{ bucket: string; raw: S3Client; store: S3BlobStore; spoolDir: string }> {
  const bucket = `test-${randomBytes(6).toString('hex')}`;
  const raw = new S3Client(s3Config());
  await raw.send(new CreateBucketCommand({ Bucket: bucket }));
  const spoolDir = mkdtempSync(join(tmpdir(), 'spool-'));
  return { bucket, raw, spoolDir, store: new S3BlobStore({ bucket, prefix, client: s3Config(), spoolDir, partSize: 5 << 20, ...options }) };
}
