/**
 * Push and pull throughput of the registry against the raw S3 SDK, same bytes, same run.
 *
 *   scripts/bench registry-transfer [--mib 1024] [--files 8] [--rounds 3]
 *
 * Starts a registry process (blobs in MinIO) on a fresh database and bucket, as deployed:
 * writes an adapter set of N random files totalling M MiB, then times:
 *   peer:     @aws-sdk/lib-storage Upload of each file to S3, and GetObject of each back
 *             into a file;
 *   ours:     `lora push` and `lora pull` (the CLI's functions): each file hashed, then
 *             sent straight to S3 in one presigned PUT whose SHA-256 S3 checks (multipart,
 *             verified whole by the registry, above 1 GiB), then commit; pulls redirected
 *             to presigned S3 URLs, each file's sha256 checked by the client;
 *   proxied:  HTTP PUT of each blob through the registry + commit (fresh bytes, so that
 *             nothing is deduplicated), and GET of each file through it (the path of
 *             clients that do not use direct transfers).
 * Rounds alternate which side goes first; prints the medians in MiB/s and the median of
 * the per-round ratios to the peer (goal: >= 0.9 for ours).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { createToken } from '../registry-api/src/auth/tokens.ts';
import { RegistryClient } from '../registry-api/src/cli/client.ts';
import { pull, push } from '../registry-api/src/cli/transfer.ts';
import { migrate } from '../registry-api/src/db/migrate.ts';
import { PrismaClient } from '../registry-api/src/generated/prisma/client.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const totalMiB = arg('mib', 1024);
const nFiles = arg('files', 8);
const rounds = arg('rounds', 3);
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

const dir = mkdtempSync(join(tmpdir(), 'bench-transfer-'));
const perFile = Math.floor((totalMiB << 20) / nFiles);
/** N random files; the proxied path stores a blob once, so it gets fresh bytes every round. */
function fileSet(name: string): { dir: string; files: { path: string; size: number; digest: string }[] } {
  const setDir = join(dir, name);
  mkdirSync(setDir);
  const files = [];
  for (let i = 0; i < nFiles; i++) {
    const data = randomBytes(perFile);
    const path = join(setDir, `adapter-${i}.safetensors`);
    writeFileSync(path, data);
    files.push({ path, size: perFile, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` });
  }
  return { dir: setDir, files };
}
const set = fileSet('set');
const files = set.files;
const bytes = files.reduce((n, f) => n + f.size, 0);
const mibps = (ms: number) => bytes / 2 ** 20 / (ms / 1000);
const time = async (fn: () => Promise<unknown>) => {
  const t = performance.now();
  await fn();
  return performance.now() - t;
};
const repo = async (name: string) => {
  const r = await fetch(`${base}/v1/repos`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ namespace: 'bench', name, baseModel: 'm' }),
  });
  if (!r.ok) throw new Error(`repository ${name}: ${r.status} ${await r.text()}`);
};

const peerPush = () =>
  Promise.all(
    files.map((f, i) =>
      new Upload({
        client: raw,
        params: { Bucket: bucket, Key: `peer/${i}`, Body: createReadStream(f.path) },
        partSize: 16 << 20,
        queueSize: 4,
      }).done(),
    ),
  );
const peerPull = (round: number) =>
  Promise.all(
    files.map(async (_f, i) =>
      pipeline(
        (await raw.send(new GetObjectCommand({ Bucket: bucket, Key: `peer/${i}` }))).Body as Readable,
        createWriteStream(join(dir, `peer-${round}-${i}`)),
      ),
    ),
  );
const client = new RegistryClient({ registry: base, token });
const proxiedPush = async (name: string, proxied: typeof files) => {
  await Promise.all(
    proxied.map(async (f) => {
      const r = await fetch(`${base}/v1/repos/bench/${name}/blobs/${f.digest}`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': String(statSync(f.path).size) },
        body: Readable.toWeb(createReadStream(f.path)) as ReadableStream,
        duplex: 'half',
      } as RequestInit);
      if (!r.ok) throw new Error(`upload ${r.status}: ${await r.text()}`);
    }),
  );
  const c = await fetch(`${base}/v1/repos/bench/${name}/versions`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({
      files: proxied.map((f, i) => ({ path: `adapter-${i}.safetensors`, digest: f.digest, size: f.size })),
      config: {},
    }),
  });
  if (!c.ok) throw new Error(`commit ${c.status}: ${await c.text()}`);
};
const proxiedPull = (name: string) =>
  Promise.all(
    files.map(async (_f, i) => {
      const r = await fetch(`${base}/v1/repos/bench/${name}/versions/1/files/adapter-${i}.safetensors`, { headers: auth });
      for await (const _ of r.body as unknown as AsyncIterable<Uint8Array>) {
      }
    }),
  );

// Rounds alternate which side goes first, so load from elsewhere on the machine falls on both.
const ms: Record<'push' | 'pull' | 'peerPush' | 'peerPull' | 'proxiedPush' | 'proxiedPull', number[]> = {
  push: [],
  pull: [],
  peerPush: [],
  peerPull: [],
  proxiedPush: [],
  proxiedPull: [],
};
try {
  for (let round = 0; round < rounds; round++) {
    // Each round pushes into a new repository: it must send every byte again (no dedup across repositories).
    await repo(`set-${round}`);
    await repo(`proxied-${round}`);
    const proxied = fileSet(`proxied-${round}`).files;
    const ours = async () => {
      ms.push.push(await time(() => push(client, set.dir, `bench/set-${round}`)));
      ms.pull.push(await time(() => pull(client, `bench/set-${round}`, '1', join(dir, `pulled-${round}`))));
    };
    const peer = async () => {
      ms.peerPush.push(await time(peerPush));
      ms.peerPull.push(await time(() => peerPull(round)));
    };
    if (round % 2 === 0) {
      await peer();
      await ours();
    } else {
      await ours();
      await peer();
    }
    ms.proxiedPush.push(await time(() => proxiedPush(`proxied-${round}`, proxied)));
    ms.proxiedPull.push(await time(() => proxiedPull(`proxied-${round}`)));
    rmSync(join(dir, `proxied-${round}`), { recursive: true });
    rmSync(join(dir, `pulled-${round}`), { recursive: true });
    for (let i = 0; i < nFiles; i++) rmSync(join(dir, `peer-${round}-${i}`));
  }
} finally {
  await cleanup();
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};
const row = (what: string, ours: number[], peer: number[]) => {
  const ratios = ours.map((o, i) => (peer[i] as number) / o);
  return `${what.padEnd(13)} ${mibps(median(ours)).toFixed(0).padStart(5)} MiB/s   raw S3 SDK ${mibps(median(peer)).toFixed(0).padStart(5)} MiB/s   ratio ${median(ratios).toFixed(2)}x (rounds: ${ratios.map((r) => r.toFixed(2)).join(' ')})`;
};
console.log(
  `registry transfer: ${nFiles} files, ${(bytes / 2 ** 20).toFixed(0)} MiB, ${rounds} rounds (medians), MinIO on loopback, node ${process.version}`,
);
console.log(row('push', ms.push, ms.peerPush));
console.log(row('pull', ms.pull, ms.peerPull));
console.log(row('push proxied', ms.proxiedPush, ms.peerPush));
console.log(row('pull proxied', ms.proxiedPull, ms.peerPull));

/** Everything the run made goes, even when it fails: a 1 GiB set takes several GiB of MinIO per run. */
async function cleanup() {
  registry.kill('SIGTERM');
  await new Promise((r) => (registry.exitCode === null ? registry.once('exit', r) : r(null)));
  let token: string | undefined;
  do {
    const page = await raw.send(new ListObjectsV2Command({ Bucket: bucket, ...(token ? { ContinuationToken: token } : {}) }));
    const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key as string }));
    if (keys.length) await raw.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
    token = page.NextContinuationToken;
  } while (token);
  await raw.send(new DeleteBucketCommand({ Bucket: bucket }));
  await prisma.$disconnect();
  raw.destroy();
  await admin.query(`DROP DATABASE ${dbName} WITH (FORCE)`);
  await admin.end();
  rmSync(dir, { recursive: true, force: true });
}
