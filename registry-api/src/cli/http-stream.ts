/**
 * Large bodies between files and HTTP on node:http streams: a file PUT to a presigned URL,
 * and a GET (through the registry's redirect to S3) into a file, hashed as it is written.
 * fetch would wrap every chunk in web streams on both ends, which costs a large share of
 * a loopback transfer's CPU.
 */
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, writeSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type ErrorCode, LowrankError } from '@lowrank/crds/errors';

const CHUNK = 1 << 20;

function send(url: URL, method: string, headers: OutgoingHttpHeaders) {
  return (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers });
}

async function text(res: IncomingMessage): Promise<string> {
  let body = '';
  for await (const chunk of res) if (body.length < 4096) body += chunk;
  return body;
}

/** A problem+json answer (the registry) or S3's XML error, as a LowrankError that says what to do. */
async function failure(res: IncomingMessage, what: string, then: string): Promise<LowrankError> {
  const body = await text(res);
  try {
    const problem = JSON.parse(body) as { code?: ErrorCode; detail?: string };
    if (problem.detail) return new LowrankError(problem.code ?? 'invalid_request', problem.detail);
  } catch {}
  const code: ErrorCode = (res.statusCode ?? 500) >= 500 ? 'unavailable' : 'invalid_request';
  return new LowrankError(code, `${what}: HTTP ${res.statusCode} ${body.slice(0, 300)}; ${then}`);
}

/** PUTs a whole file; onBytes reports what was read for sending. */
export async function putFile(
  url: string,
  headers: Record<string, string>,
  file: { abs: string; size: number },
  onBytes: (n: number) => void,
): Promise<void> {
  const req = send(new URL(url), 'PUT', { ...headers, 'content-length': String(file.size) });
  const answered = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
  const source = createReadStream(file.abs, { highWaterMark: CHUNK });
  source.on('data', (c) => onBytes(c.length));
  // A refusal can arrive before the whole body is sent (S3 stops reading): its answer wins over the broken pipe.
  const sent = pipeline(source, req).catch((err: Error) => err);
  let res: IncomingMessage;
  try {
    res = await answered;
  } catch (err) {
    source.destroy();
    throw new LowrankError('unavailable', `sending ${file.abs} failed: ${(err as Error).message}; push again to resume`);
  }
  if ((res.statusCode ?? 0) >= 300) {
    source.destroy();
    throw await failure(res, `S3 refused ${file.abs}`, 'push again');
  }
  res.resume();
  const err = await sent;
  if (err) throw new LowrankError('unavailable', `sending ${file.abs} failed: ${err.message}; push again to resume`);
}

/**
 * GETs url into `target`, following one redirect (to S3) without the registry's headers,
 * and returns the sha256 and length of what was written.
 */
export async function getToFile(
  url: string,
  headers: Record<string, string>,
  target: string,
  onBytes: (n: number) => void,
): Promise<{ digest: string; bytes: number }> {
  const get = (u: URL, h: Record<string, string>) =>
    new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(u, 'GET', h);
      req.once('response', resolve);
      req.once('error', (err) =>
        reject(new LowrankError('unavailable', `cannot reach ${u.origin}: ${err.message}; run the pull again to resume`)),
      );
      req.end();
    });
  let res = await get(new URL(url), headers);
  const status = res.statusCode ?? 0;
  if (status >= 300 && status < 400 && res.headers.location) {
    res.resume();
    res = await get(new URL(res.headers.location, url), {}); // the token is for the registry, not for S3
  }
  if (res.statusCode !== 200) throw await failure(res, `GET ${url}`, 'run the pull again');
  const hash = createHash('sha256');
  let bytes = 0;
  const fd = openSync(target, 'w');
  try {
    // Synchronous writes into the page cache: a thread-pool round trip per 64 KiB socket chunk
    // (createWriteStream) costs more CPU than the copy itself.
    await pipeline(
      res,
      new Writable({
        highWaterMark: CHUNK,
        write(chunk: Buffer, _enc, cb) {
          try {
            hash.update(chunk);
            writeSync(fd, chunk);
            bytes += chunk.length;
            onBytes(chunk.length);
            cb();
          } catch (err) {
            cb(err as Error);
          }
        },
      }),
    );
  } finally {
    closeSync(fd);
  }
  return { digest: `sha256:${hash.digest('hex')}`, bytes };
}
