/**
 * The client side of direct uploads: opens (or resumes) the blob's upload session, sends
 * the bytes straight to S3 through presigned URLs, then asks the registry to complete and
 * verify. Mode single: the whole file in one streamed PUT whose SHA-256 (the digest) S3
 * checks. Multipart: the parts S3 does not have yet, four at a time, each with its SHA-256
 * so S3 refuses a corrupted part. Returns false when the registry cannot take direct
 * uploads (filesystem store).
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { LowrankError } from '@lowrank/crds/errors';
import type { RegistryClient } from './client.ts';
import { putFile } from './http-stream.ts';
import { eachLimit } from './limit.ts';

const PARALLEL = 4;

interface Session {
  id?: string;
  state: 'open' | 'exists' | 'proxy';
  /** Absent from registries older than single-request uploads: multipart. */
  mode?: 'single' | 'multipart';
  partSize: number;
  partCount: number;
  uploadedParts: { number: number; size: number }[];
  location: string;
}

export async function uploadDirect(
  client: RegistryClient,
  repo: string,
  file: { abs: string; digest: string; size: number },
  onBytes: (n: number) => void,
  retried = false,
): Promise<boolean> {
  const session = await client.json<Session>('POST', `/v1/repos/${repo}/uploads`, { digest: file.digest, size: file.size });
  if (session.state === 'proxy') return false;
  if (session.state === 'exists') {
    onBytes(file.size);
    return true;
  }
  if (session.mode === 'single') {
    const sha256 = Buffer.from(file.digest.slice('sha256:'.length), 'hex').toString('base64');
    const { parts } = await client.json<{ parts: { url: string; headers: Record<string, string> }[] }>(
      'POST',
      `${session.location}/parts`,
      { parts: [{ number: 1, sha256 }] },
    );
    const put = parts[0];
    if (!put) throw new LowrankError('internal', `the registry signed no URL for ${file.abs}`);
    await putFile(put.url, put.headers, file, onBytes);
  } else await sendParts(client, session, file, onBytes);
  try {
    await client.json('POST', `${session.location}:complete`);
  } catch (err) {
    // Another upload stored the same blob meanwhile (multipart), or its PUT of the same bytes came after ours (single): once more.
    const again = err instanceof LowrankError && (err.code === 'conflict' || (session.mode === 'single' && err.code === 'invalid_file'));
    if (again && !retried) return uploadDirect(client, repo, file, onBytes, true);
    throw err;
  }
  return true;
}

async function sendParts(
  client: RegistryClient,
  session: Session,
  file: { abs: string; digest: string; size: number },
  onBytes: (n: number) => void,
): Promise<void> {
  const done = new Set(session.uploadedParts.map((p) => p.number));
  onBytes(session.uploadedParts.reduce((n, p) => n + p.size, 0));
  const todo = Array.from({ length: session.partCount }, (_, i) => i + 1).filter((n) => !done.has(n));
  const fh = await open(file.abs, 'r');
  try {
    const sendPart = async (n: number) => {
      const start = (n - 1) * session.partSize;
      const length = Math.min(session.partSize, file.size - start);
      const buf = Buffer.allocUnsafe(length);
      await fh.read(buf, 0, length, start);
      const sha256 = createHash('sha256').update(buf).digest('base64');
      const { parts } = await client.json<{ parts: { url: string; headers: Record<string, string> }[] }>(
        'POST',
        `${session.location}/parts`,
        { parts: [{ number: n, sha256 }] },
      );
      const part = parts[0];
      if (!part) throw new LowrankError('internal', `the registry signed no URL for part ${n}`);
      let res: Response;
      try {
        res = await fetch(part.url, { method: 'PUT', headers: { ...part.headers, 'content-length': String(length) }, body: buf });
      } catch (err) {
        throw new LowrankError(
          'unavailable',
          `part ${n} of ${file.abs} could not reach S3: ${(err as Error).message}; push again to resume`,
        );
      }
      if (!res.ok)
        throw new LowrankError(
          'unavailable',
          `S3 refused part ${n} of ${file.abs} (HTTP ${res.status}): ${(await res.text()).slice(0, 300)}; push again to resume`,
        );
      onBytes(length);
    };
    await eachLimit(todo, PARALLEL, sendPart);
  } finally {
    await fh.close();
  }
}
