/**
 * scripts/services as a user runs it: real PostgreSQL, Redis and MinIO in a fresh state
 * dir, each answering its own protocol; a second start changes nothing; stop ends
 * exactly the processes it started and a restart keeps the data.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import pg from 'pg';

const root = join(import.meta.dirname, '..', '..');
const stateDir = mkdtempSync(join(tmpdir(), 'lowrank-services-test-'));
const services = (...args: string[]) => {
  const r = spawnSync(join(root, 'scripts', 'services'), args, { encoding: 'utf8', env: { ...process.env, LOWRANK_STATE_DIR: stateDir } });
  return { status: r.status, out: r.stdout, err: r.stderr };
};
const readEnv = () =>
  Object.fromEntries(
    readFileSync(join(stateDir, 'services.env'), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
const s3For = (env: Record<string, string>) =>
  new S3Client({
    endpoint: env.S3_ENDPOINT,
    region: env.S3_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: env.S3_ACCESS_KEY_ID as string, secretAccessKey: env.S3_SECRET_ACCESS_KEY as string },
  });
const pids = () => JSON.parse(readFileSync(join(stateDir, 'services.json'), 'utf8')) as Record<string, { pid: number }>;
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

after(() => {
  const pgData = JSON.parse(readFileSync(join(stateDir, 'services.json'), 'utf8')).postgres?.extra?.dataDir as string | undefined;
  services('stop');
  rmSync(stateDir, { recursive: true, force: true });
  // As root the cluster may live in /tmp (see scripts/lib/services/postgres.ts).
  if (pgData && !pgData.startsWith(stateDir)) rmSync(dirname(pgData), { recursive: true, force: true });
});

describe('scripts/services', () => {
  it('starts PostgreSQL, Redis and MinIO that answer their protocols', async () => {
    const r = services('start');
    assert.equal(r.status, 0, r.err);
    const env = readEnv();
    const db = new pg.Client({ connectionString: env.DATABASE_URL });
    await db.connect();
    await db.query('create table if not exists t (v text)');
    await db.query("insert into t values ('kept')");
    await db.end();
    const redis = new Redis(env.REDIS_URL as string);
    await redis.set('k', 'kept');
    redis.disconnect();
    const s3 = s3For(env);
    await s3.send(new CreateBucketCommand({ Bucket: 'svc-test' }));
    await s3.send(new PutObjectCommand({ Bucket: 'svc-test', Key: 'a', Body: 'kept' }));
    s3.destroy();
  });

  it('is idempotent: a second start leaves the running processes alone', () => {
    const before = pids();
    const r = services('start');
    assert.equal(r.status, 0, r.err);
    assert.match(r.err, /\[postgres\] already running/);
    assert.deepEqual(pids(), before);
    const status = services('status');
    assert.match(status.out, /postgres\s+running/);
    assert.match(status.out, /minio\s+running/);
  });

  it('stops exactly its processes by PID, and a restart keeps the data', async () => {
    const before = pids();
    assert.equal(services('stop').status, 0);
    for (const [name, s] of Object.entries(before)) assert.equal(alive(s.pid), false, `${name} (pid ${s.pid}) still running`);
    assert.match(services('status').out, /redis\s+stopped/);
    assert.equal(services('start').status, 0);
    const env = readEnv();
    const db = new pg.Client({ connectionString: env.DATABASE_URL });
    await db.connect();
    assert.deepEqual((await db.query('select v from t')).rows, [{ v: 'kept' }]);
    await db.end();
    const redis = new Redis(env.REDIS_URL as string);
    assert.equal(await redis.get('k'), 'kept');
    redis.disconnect();
    const s3 = s3For(env);
    const obj = await s3.send(new GetObjectCommand({ Bucket: 'svc-test', Key: 'a' }));
    assert.equal(await obj.Body?.transformToString(), 'kept');
    s3.destroy();
  });

  it('refuses an unknown service or command with a clear message', () => {
    const r = services('start', 'mongodb');
    assert.equal(r.status, 1);
    assert.match(r.err, /unknown service "mongodb"; choose from postgres, redis, minio/);
    assert.match(services('restart').err, /unknown command "restart"/);
  });
});
