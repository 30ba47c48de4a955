/**
 * Push and pull throughput of the registry against the raw S3 SDK, same bytes, same run.
 *
 *   scripts/bench registry-transfer [--mib 1024] [--files 8]
 *
 * Starts a registry process (blobs in MinIO) on a fresh database and bucket, as deployed:
 * writes an adapter set of N random files totalling M MiB, then times:
 *   peer:  @aws-sdk/lib-storage Upload of each file to S3, and GetObject of each back;
 *   ours:  HTTP PUT of each blob to the registry + commit, and GET of each file back
 *          (the registry verifies sha256 on the way in and on the way out).
 * Prints MiB/s for both and the ratio ours/peer (goal: >= 0.9).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CreateBucketCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { createToken } from '../registry-api/src/auth/tokens.ts';
import { migrate } from '../registry-api/src/db/migrate.ts';
import { PrismaClient } from '../registry-api/src/generated/prisma/client.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const totalMiB = arg('mib', 1024);
const nFiles = arg('files', 8);
const env = (k: string) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set; run through scripts/bench, which starts the services`);
  return v;
};

const s3config = {
  endpoint: env('S3_ENDPOINT'),
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: { accessKeyId: env('S3_ACCESS_KEY_ID'), secretAccessKey: env('S3_SECRET_ACCESS_KEY') },
  requestChecksumCalculation: 'WHEN_REQUIRED' as const,
  responseChecksumValidation: 'WHEN_REQUIRED' as const,
};
const raw = new S3Client(s3config);
const bucket = `bench-${randomBytes(4).toString('hex')}`;
await raw.send(new CreateBucketCommand({ Bucket: bucket }));

// A fresh database for the registry.
const admin = new pg.Client({ connectionString: env('DATABASE_URL') });
await admin.connect();
const dbName = `bench_${randomBytes(4).toString('hex')}`;
await admin.query(`CREATE DATABASE ${dbName}`);
const dbUrl = new URL(env('DATABASE_URL'));
dbUrl.pathname = `/${dbName}`;
await migrate(dbUrl.toString());
const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: dbUrl.toString() }) });
// The registry runs as its own process, as deployed; the benchmark is its client.
const registry = spawn(process.execPath, [join(import.meta.dirname, '..', 'registry-api', 'src', 'main.ts')], {
  env: {
    ...process.env,
    DATABASE_URL: dbUrl.toString(),
    LOWRANK_PORT: '0',
    LOWRANK_BLOB_STORE: 's3',
    S3_BUCKET: bucket,
    S3_FORCE_PATH_STYLE: 'true',
    LOWRANK_LOG_LEVEL: 'info', // the listening line is how the benchmark learns the port
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const base = await new Promise<string>((resolve, reject) => {
  let buf = '';
  registry.stdout.on('data', (d: Buffer) => {
    if (buf.length > 1 << 16) return; // listening is logged first; the rest (request logs) is drained
    buf += d.toString();
    const m = /registry listening on (http:\/\/[0-9.:]+)/.exec(buf);
    if (m) resolve(m[1] as string);
  });
  registry.once('exit', (code: number | null) => reject(new Error(`the registry exited (${code}) before listening`)));
});
const org = await prisma.organization.create({ data: { name: 'bench' } });
const team = await prisma.team.create({ data: { name: 'bench', organizationId: org.id } });
const user = await prisma.user.create({ data: { handle: 'bench', memberships: { create: { teamId: team.id, role: 'maintainer' } } } });
const token = (await createToken(prisma, { userId: user.id, name: 'bench', scope: 'write' })).token;
const auth = { authorization: `Bearer ${token}` };
await fetch(`${base}/v1/repos`, {
  method: 'POST',
  headers: { ...auth, 'content-type': 'application/json' },
  body: JSON.stringify({ namespace: 'bench', name: 'set', baseModel: 'm' }),
});

const dir = mkdtempSync(join(tmpdir(), 'bench-transfer-'));
const files: { path: string; size: number; digest: string }[] = [];
const perFile = Math.floor((totalMiB << 20) / nFiles);
for (let i = 0; i < nFiles; i++) {
  const data = randomBytes(perFile);
  const path = join(dir, `adapter-${i}.safetensors`);
  writeFileSync(path, data);
  files.push({ path, size: perFile, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` });
}
const bytes = files.reduce((n, f) => n + f.size, 0);
const mibps = (ms: number) => bytes / 2 ** 20 / (ms / 1000);
const time = async (fn: () => Promise<unknown>) => {
  const t = performance.now();
  await fn();
  return performance.now() - t;
};
const drain = async (body: Readable) => {
  for await (const _ of body) {
  }
};

const peerPush = await time(() =>
  Promise.all(
    files.map((f, i) =>
      new Upload({
        client: raw,
        params: { Bucket: bucket, Key: `peer/${i}`, Body: createReadStream(f.path) },
        partSize: 16 << 20,
        queueSize: 4,
      }).done(),
    ),
  ),
);
const peerPull = await time(() =>
  Promise.all(
    files.map(async (_f, i) => drain((await raw.send(new GetObjectCommand({ Bucket: bucket, Key: `peer/${i}` }))).Body as Readable)),
  ),
);

const oursPush = await time(async () => {
  await Promise.all(
    files.map(async (f) => {
      const r = await fetch(`${base}/v1/repos/bench/set/blobs/${f.digest}`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': String(statSync(f.path).size) },
        body: Readable.toWeb(createReadStream(f.path)) as ReadableStream,
        duplex: 'half',
      } as RequestInit);
      if (!r.ok) throw new Error(`upload ${r.status}: ${await r.text()}`);
    }),
  );
  const c = await fetch(`${base}/v1/repos/bench/set/versions`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({
      files: files.map((f, i) => ({ path: `adapter-${i}.safetensors`, digest: f.digest, size: f.size })),
      config: {},
    }),
  });
  if (!c.ok) throw new Error(`commit ${c.status}: ${await c.text()}`);
});
const oursPull = await time(() =>
  Promise.all(
    files.map(async (_f, i) => {
      const r = await fetch(`${base}/v1/repos/bench/set/versions/1/files/adapter-${i}.safetensors`, { headers: auth });
      for await (const _ of r.body as unknown as AsyncIterable<Uint8Array>) {
      }
    }),
  ),
);

const row = (what: string, ours: number, peer: number) =>
  `${what.padEnd(6)} ours ${mibps(ours).toFixed(0).padStart(5)} MiB/s   raw S3 SDK ${mibps(peer).toFixed(0).padStart(5)} MiB/s   ratio ${(peer / ours).toFixed(2)}x`;
console.log(`registry transfer: ${nFiles} files, ${(bytes / 2 ** 20).toFixed(0)} MiB, MinIO on loopback, node ${process.version}`);
console.log(row('push', oursPush, peerPush));
console.log(row('pull', oursPull, peerPull));

registry.kill('SIGTERM');
await new Promise((r) => registry.once('exit', r));
await prisma.$disconnect();
raw.destroy();
await admin.query(`DROP DATABASE ${dbName} WITH (FORCE)`);
await admin.end();
rmSync(dir, { recursive: true, force: true });
