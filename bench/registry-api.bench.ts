/**
 * Registry API throughput and latency under load (autocannon), as deployed: the registry
 * as its own process on a fresh database, seeded with R repositories of V versions each
 * with lineage. Times, for C concurrent connections over D seconds each:
 *   search          GET /v1/repos?q=...&baseModel=...   (full text + filters)
 *   version         GET /v1/repos/{ns}/{name}/versions/{n}
 *   lineage         GET /v1/repos/{ns}/{name}/versions/{n}/lineage
 *   floor           GET /healthz (no database: what the HTTP stack itself costs, the reference)
 * Prints requests/s, p50 and p99 latency, and each route's throughput as a ratio to the floor.
 *
 *   scripts/bench registry-api [--repos 500] [--versions 4] [--connections 16] [--seconds 10]
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { PrismaPg } from '@prisma/adapter-pg';
import autocannon from 'autocannon';
import pg from 'pg';
import { createToken } from '../registry-api/src/auth/tokens.ts';
import { migrate } from '../registry-api/src/db/migrate.ts';
import { PrismaClient } from '../registry-api/src/generated/prisma/client.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const nRepos = arg('repos', 500);
const nVersions = arg('versions', 4);
const connections = arg('connections', 16);
const seconds = arg('seconds', 10);
const env = (k: string) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set; run through scripts/bench, which starts the services`);
  return v;
};

const admin = new pg.Client({ connectionString: env('DATABASE_URL') });
await admin.connect();
const dbName = `bench_${randomBytes(4).toString('hex')}`;
await admin.query(`CREATE DATABASE ${dbName}`);
const dbUrl = new URL(env('DATABASE_URL'));
dbUrl.pathname = `/${dbName}`;
await migrate(dbUrl.toString());
const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: dbUrl.toString() }) });

// Seed straight into the database (the benchmark is about reads).
const org = await prisma.organization.create({ data: { name: 'bench' } });
const team = await prisma.team.create({ data: { name: 'bench', organizationId: org.id } });
const user = await prisma.user.create({ data: { handle: 'bench', memberships: { create: { teamId: team.id, role: 'maintainer' } } } });
const token = (await createToken(prisma, { userId: user.id, name: 'bench', scope: 'read' })).token;
const bases = ['meta-llama/Llama-3.2-1B', 'Qwen/Qwen2.5-0.5B', 'mistralai/Mistral-7B-v0.3', 'HuggingFaceTB/SmolLM2-135M'];
const tasks = ['support', 'billing', 'triage', 'summarise', 'translate', 'code-review', 'sql', 'legal'];
const blob = await prisma.blob.create({ data: { digest: `sha256:${'a'.repeat(64)}`, size: 1024n, refCount: nRepos * nVersions } });
let previous: string | undefined;
for (let r = 0; r < nRepos; r++) {
  const task = tasks[r % tasks.length] as string;
  const repo = await prisma.repository.create({
    data: {
      teamId: team.id,
      namespace: 'bench',
      name: `${task}-${r}`,
      baseModel: bases[r % bases.length] as string,
      taskTags: [task, r % 2 ? 'chat' : 'instruct'],
      visibility: 'internal',
      description: `A ${task} adapter number ${r}, rank ${8 << (r % 4)}`,
    },
  });
  for (let n = 1; n <= nVersions; n++) {
    const v = await prisma.version.create({
      data: {
        repositoryId: repo.id,
        number: n,
        config: { peft_type: 'LORA', r: 8 << (r % 4), lora_alpha: 16 },
        method: n === 1 ? 'lora' : 'rank-reduction',
        rank: 8 << (r % 4),
        files: { create: { path: 'adapter_model.safetensors', blobDigest: blob.digest, size: 1024n } },
        ...(previous
          ? { parents: { create: { relation: n === 1 ? 'merged_from' : 'compressed_from', parentId: previous, weight: 0.5 } } }
          : {}),
      },
    });
    previous = v.id;
  }
}

const registry = spawn(process.execPath, [join(import.meta.dirname, '..', 'registry-api', 'src', 'main.ts')], {
  env: {
    ...process.env,
    DATABASE_URL: dbUrl.toString(),
    LOWRANK_PORT: '0',
    LOWRANK_RATE_LIMIT: '0',
    LOWRANK_POSTPROCESS: 'off',
    LOWRANK_LOG_LEVEL: 'info', // the listening line is how the benchmark learns the port; request logs are drained
    LOWRANK_DATA_DIR: join(process.env.TMPDIR ?? '/tmp', `bench-api-${dbName}`),
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const base = await new Promise<string>((resolve, reject) => {
  let buf = '';
  registry.stdout.on('data', (d: Buffer) => {
    if (buf.length > 1 << 16) return;
    buf += d.toString();
    const m = /registry listening on (http:\/\/[0-9.:]+)/.exec(buf);
    if (m) resolve(m[1] as string);
  });
  registry.once('exit', (code: number | null) => reject(new Error(`the registry exited (${code}) before listening`)));
});

const mid = Math.floor(nRepos / 2);
const routes: [string, string][] = [
  ['floor', '/healthz'],
  ['search', `/v1/repos?q=${tasks[1]}&baseModel=${encodeURIComponent(bases[1] as string)}`],
  ['version', `/v1/repos/bench/${tasks[mid % tasks.length]}-${mid}/versions/2`],
  ['lineage', `/v1/repos/bench/${tasks[mid % tasks.length]}-${mid}/versions/2/lineage?depth=4`],
];
const results: Record<string, autocannon.Result> = {};
for (const [name, path] of routes) {
  // A short warm-up so JIT and connection pools are in their steady state.
  await autocannon({ url: `${base}${path}`, connections, duration: 1, headers: { authorization: `Bearer ${token}` } });
  results[name] = await autocannon({
    url: `${base}${path}`,
    connections,
    duration: seconds,
    headers: { authorization: `Bearer ${token}` },
  });
  const r = results[name];
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${name}: ${r.non2xx} non-2xx answers and ${r.errors} errors`);
}
const floor = results.floor?.requests.average ?? 1;
console.log(
  `registry API: ${nRepos} repositories x ${nVersions} versions, ${connections} connections, ${seconds} s each, node ${process.version}`,
);
for (const [name] of routes) {
  const r = results[name] as autocannon.Result;
  console.log(
    `${name.padEnd(8)} ${r.requests.average.toFixed(0).padStart(6)} req/s   p50 ${String(r.latency.p50).padStart(4)} ms   p99 ${String(r.latency.p99).padStart(4)} ms   ratio to floor ${(r.requests.average / floor).toFixed(2)}`,
  );
}

registry.kill('SIGTERM');
await new Promise((r) => registry.once('exit', r));
await prisma.$disconnect();
await admin.query(`DROP DATABASE ${dbName} WITH (FORCE)`);
await admin.end();
