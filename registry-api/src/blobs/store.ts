/**
 * Content-addressed blob storage: every file of every adapter version is stored once
 * under its SHA-256, verified when written (the content must hash to the address it is
 * stored at, and to the digest the client claimed) and when read (a reader gets an error,
 * not silently wrong bytes, if storage corrupted it). Two backends: the local filesystem
 * (the embedded default) and S3.
 */
import type { Readable } from 'node:stream';
import type { DirectUploads } from './direct-upload.ts';

export interface PutResult {
  digest: string;
  size: number;
  /** False when identical content was already stored (deduplicated). */
  created: boolean;
}

export interface PutOptions {
  /** The digest the client says the content has; a mismatch stores nothing. */
  expectedDigest?: string;
  /** The size the client says the content has; a mismatch stores nothing. */
  expectedSize?: number;
  /** Refuse content larger than this many bytes (default: no limit). */
  maxBytes?: number;
}

export interface BlobStore {
  readonly kind: 'filesystem' | 's3';
  put(body: Readable | Uint8Array, options?: PutOptions): Promise<PutResult>;
  /** The content, hashed as it streams: the stream errors at its end if it does not match. */
  get(digest: string): Promise<Readable>;
  /**
   * Bytes [start, end] (inclusive) of a blob, for HTTP Range requests. A part cannot be
   * checked against the whole blob's digest; clients verify whole files.
   */
  getRange(digest: string, start: number, end: number): Promise<Readable>;
  stat(digest: string): Promise<{ size: number } | undefined>;
  delete(digest: string): Promise<void>;
  /**
   * A time-limited URL from which a client downloads the blob straight from storage (S3
   * only), so the registry is not in the data path; the client checks the digest itself.
   */
  presignGet?(digest: string, expiresInSeconds: number): Promise<string>;
  /** Multipart uploads the client sends straight to storage (S3 only). */
  readonly direct?: DirectUploads;
}
