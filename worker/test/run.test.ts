/**
 * `lora-worker run` and the local executor against a real registry (PostgreSQL, Redis,
 * MinIO): merge and compression jobs from spec to registry version with lineage, method
 * metadata and the job link; bad input fails at once and leaves the registry unchanged;
 * an unreachable registry is retryable; jobs submitted over REST are run by the executor
 * with logs, retries with backoff, and cancellation of a running worker.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import { createToken } from '../../registry-api/src/auth/tokens.ts';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { pull, push } from '../../registry-api/src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { type Executor, startExecutor } from '../src/executor/executor.ts';
import type { LoraModule } from '../src/native/linalg.ts';
import { readSafetensors, tensorToFloat32, writeSafetensors } from '../src/native/safetensors.ts';
import { readPeftAdapter, writePeftAdapter } from '../src/peft/adapter-dir.ts';
import { mergeIntoBase } from '../src/peft/merge-into-base.ts';
import { lcg, randomModule } from './support/random-adapter.ts';
import { registryApi } from './support/registry-users.ts';
import { runWorker } from './support/worker-cli.ts';

const run = promisify(execFile);
const _CLI = join(import.meta.dirname, '..', 'src', 'cli.ts');
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-run-test-'));
let reg: TestRegistry;
const tok = { admin: '', ada: '' };

function randomAdapter(seed: number, r: number): Record<string, LoraModule> {
  const rnd = lcg(seed);
  return {
    'model.layers.0.self_attn.q_proj': randomModule(rnd, 32, 32, r, 2),
    'model.layers.0.self_attn.v_proj': randomModule(rnd, 16, 32, r, 2),
  };
}

const worker = (spec: unknown, env: Record<string, string> = {}) => runWorker(spec, { registry: reg.base, token: tok.ada, tmp, env });

const api = registryApi(() => reg.base, tok);

const versionCount = async () => reg.prisma.version.count();

// Its own Redis database, so this registry's queue is not shared with other test files.
const redisUrl = `${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/7`;

before(async () => {
  reg = await startRegistry({ redis: new Redis(redisUrl) });
  await reg.redis.flushdb();
  const org = await reg.prisma.organization.create({ data: { name: 'acme' } });
  const nlp = await reg.prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const ada = await reg.prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: nlp.id } } } });
  const root = await reg.prisma.user.create({ data: { handle: 'root', isAdmin: true } });
  tok.ada = (await createToken(reg.prisma, { userId: ada.id, name: 't', scope: 'write' })).token;
  tok.admin = (await createToken(reg.prisma, { userId: root.id, name: 'executor', scope: 'admin' })).token;
  const client = new RegistryClient({ registry: reg.base, token: tok.ada });
  await client.json('POST', '/v1/repos', { namespace: 'nlp', name: 'bot', baseModel: 'tiny/llama' });
  for (const [i, seed] of [11, 22].entries()) {
    const dir = join(tmp, `in-${i}`);
    writePeftAdapter(dir, randomAdapter(seed, 8), { base_model_name_or_path: 'tiny/llama' });
    await push(client, dir, 'nlp/bot');
  }
});

describe('lora-worker run', () => {
  it('merges two registry versions into a new version with merged_from lineage and weights', async () => {
    const spec = {
      kind: 'AdapterMerge',
      metadata: { name: 'bot-ties' },
      spec: {
        inputs: [
          { repository: 'nlp/bot', version: 1 },
          { repository: 'nlp/bot', version: 2 },
        ],
        weights: [0.7, 0.3],
        method: 'ties',
        density: 0.5,
        output: { repository: 'nlp/merged', tags: ['ties'], labels: { team: 'support' } },
      },
    };
    const res = await worker(spec);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.deepEqual(res.result, { status: 'succeeded', output: { repository: 'nlp/merged', version: 1, ref: 'nlp/merged@1' } });
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/merged/versions/ties');
    assert.equal(v.number, 1);
    assert.equal(v.method, 'merge-ties');
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent, l.weight]),
      [
        ['merged_from', 'nlp/bot@1', 0.7],
        ['merged_from', 'nlp/bot@2', 0.3],
      ],
    );
    assert.equal(v.methodMetadata.density, 0.5);
    assert.deepEqual(v.methodMetadata.labels, { team: 'support' });
    // What computed it (METHODS §8.2): the core, the backend (this machine has no GPU) and the CPU BLAS.
    assert.match(v.methodMetadata.compute.core, /^\d+\.\d+\.\d+$/);
    assert.equal(v.methodMetadata.compute.backend, 'cpu');
    assert.match(v.methodMetadata.compute.blas, /OpenBLAS/);
    // Progress went to stdout as JSON lines.
    const events = res.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).event);
    assert.ok(events.includes('progress') && events.at(-1) === 'succeeded', events.join(','));
  });

  it('reduces the rank of a version by a fixed policy and records the compression', async () => {
    const res = await worker({
      kind: 'CompressionJob',
      spec: {
        mode: 'rank-reduction',
        source: { adapter: { repository: 'nlp/bot', version: 1 } },
        rankPolicy: { fixed: { rank: 4 } },
        output: { repository: 'nlp/bot', tags: ['r4'] },
      },
    });
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/bot/versions/r4');
    assert.equal(v.rank, 4);
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent]),
      [['compressed_from', 'nlp/bot@1']],
    );
    assert.equal(v.methodMetadata.ranksBefore, 8);
    assert.equal(v.methodMetadata.ranksAfter, 4);
    assert.ok(v.metrics.energyKeptMin > 0 && v.metrics.energyKeptMin <= 1);
    // The pulled output is an ordinary PEFT adapter at rank 4.
    const out = join(tmp, 'r4');
    const { pull } = await import('../../registry-api/src/cli/transfer.ts');
    await pull(new RegistryClient({ registry: reg.base, token: tok.ada }), 'nlp/bot', 'r4', out);
    const adapter = readPeftAdapter(out);
    assert.deepEqual(
      Object.values(adapter.modules).map((m) => m.r),
      [4, 4],
    );
  });

  it('merges into a local base and pushes the model directory (bf16), and shards past the limit', async () => {
    const base = join(tmp, 'base-model');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(base, { recursive: true });
    const w = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed));
    writeSafetensors(join(base, 'model.safetensors'), {
      'model.layers.0.self_attn.q_proj.weight': { dtype: 'F32', shape: [32, 32], data: w(1024, 1) },
      'model.layers.0.self_attn.v_proj.weight': { dtype: 'F32', shape: [16, 32], data: w(512, 2) },
      'model.norm.weight': { dtype: 'F32', shape: [32], data: w(32, 3) },
    });
    writeFileSync(join(base, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: 32 }));
    const res = await worker({
      kind: 'AdapterMerge',
      spec: {
        inputs: [{ repository: 'nlp/bot', version: 1 }],
        method: 'linear',
        intoBase: { enabled: true, baseModel: { name: 'tiny/llama', path: base }, dtype: 'bf16' },
        output: { repository: 'nlp/bot-merged-model' },
      },
    });
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/bot-merged-model/versions/1');
    assert.deepEqual(v.files.map((f: any) => f.path).sort(), ['config.json', 'model.safetensors']);
    assert.equal(v.methodMetadata.kind, 'merge-into-base');
    assert.ok(v.lineage.some((l: any) => l.relation === 'merged_from' && l.parentRef === 'hf:tiny/llama'));
    const out = join(tmp, 'merged-model');
    await pull(new RegistryClient({ registry: reg.base, token: tok.ada }), 'nlp/bot-merged-model', '1', out);
    const merged = readSafetensors(join(out, 'model.safetensors')).tensors;
    const q = merged['model.layers.0.self_attn.q_proj.weight'];
    assert.equal(q?.dtype, 'BF16');
    // W + s·B·A from the adapter as pushed, within bf16 rounding (relative 2^-8 per entry).
    const m = randomAdapter(11, 8)['model.layers.0.self_attn.q_proj'] as LoraModule;
    const got = tensorToFloat32(q as Parameters<typeof tensorToFloat32>[0]);
    const want = w(1024, 1);
    for (let i = 0; i < 32; i++)
      for (let j = 0; j < 32; j++) {
        let d = 0;
        for (let k = 0; k < 8; k++) d += (m.B[i * 8 + k] as number) * (m.A[k * 32 + j] as number);
        want[i * 32 + j] = (want[i * 32 + j] as number) + m.scale * d;
      }
    for (const [i, x] of want.entries())
      assert.ok(Math.abs((got[i] as number) - x) <= 2 ** -8 * Math.abs(x) + 1e-6, `entry ${i}: ${got[i]} vs ${x}`);
    // The exporter shards as save_pretrained does, with an index.
    const sharded = join(tmp, 'sharded-model');
    const r = mergeIntoBase(base, { 'model.layers.0.self_attn.q_proj': m }, sharded, { maxShardBytes: 4096 });
    assert.deepEqual(r.shards, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    const index = JSON.parse(readFileSync(join(sharded, 'model.safetensors.index.json'), 'utf8'));
    assert.equal(index.weight_map['model.norm.weight'], 'model-00002-of-00002.safetensors');
    assert.equal(index.metadata.total_size, (1024 + 512 + 32) * 4);
  });

  it('fails bad input at once (exit 65) with what to fix, and the registry is unchanged', async () => {
    const before = await versionCount();
    const cases: [unknown, RegExp][] = [
      [
        {
          kind: 'AdapterMerge',
          spec: { inputs: [{ repository: 'nlp/bot', version: 9 }], method: 'linear', output: { repository: 'nlp/x' } },
        },
        /has no version 9/,
      ],
      [
        { kind: 'AdapterMerge', spec: { inputs: [{ path: join(tmp, 'nowhere') }], method: 'linear', output: { repository: 'nlp/x' } } },
        /is not a directory/,
      ],
      [
        {
          kind: 'CompressionJob',
          spec: { mode: 'rank-reduction', source: { adapter: { repository: 'nlp/bot' } }, output: { repository: 'nlp/x' } },
        },
        /rankPolicy/,
      ],
      [
        {
          kind: 'AdapterMerge',
          spec: { inputs: [{ repository: 'nlp/bot' }], method: 'model_stock', output: { repository: 'nlp/x' } },
        },
        /model_stock needs at least 2 inputs/,
      ],
    ];
    for (const [spec, message] of cases) {
      const res = await worker(spec);
      assert.equal(res.code, 65, `${JSON.stringify(spec)}: ${res.stderr}${res.stdout}`);
      assert.equal(res.result.status, 'failed');
      assert.match(res.result.message, message);
    }
    const invalid = await worker({ kind: 'AdapterMerge', spec: { method: 'ties' } });
    assert.equal(invalid.code, 65);
    assert.match(invalid.stderr, /spec.inputs: Required value/);
    assert.equal(await versionCount(), before);
    assert.equal(await reg.prisma.repository.count({ where: { name: 'x' } }), 0);
  });

  it('says an unreachable registry is retryable (exit 75)', async () => {
    const res = await worker(
      { kind: 'AdapterMerge', spec: { inputs: [{ repository: 'nlp/bot' }], method: 'linear', output: { repository: 'nlp/x' } } },
      { LOWRANK_REGISTRY_URL: 'http://127.0.0.1:9' },
    );
    assert.equal(res.code, 75, res.stderr + res.stdout);
    assert.equal(res.result.reason, 'unavailable');
  });
});

describe('local executor', () => {
  let executor: Executor;
  const start = (workRoot = join(tmp, 'work')) =>
    startExecutor({ redisUrl, registryUrl: reg.base, token: tok.admin, concurrency: 2, logsDir: join(tmp, 'logs'), workRoot });

  before(async () => {
    executor = await start();
    await executor.ready();
  });
  after(() => executor?.close());

  async function submit(spec: unknown): Promise<string> {
    const { status, body } = await api('ada', 'POST', '/v1/jobs', spec);
    assert.equal(status, 201, JSON.stringify(body));
    return body.id;
  }

  async function until(id: string, done: (j: any) => boolean, ms = 60_000): Promise<any> {
    const end = Date.now() + ms;
    for (;;) {
      const { body } = await api('ada', 'GET', `/v1/jobs/${id}`);
      if (done(body)) return body;
      if (Date.now() > end) assert.fail(`job ${id} stuck: ${JSON.stringify(body)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  it('runs a submitted merge to a version linked to its job, with its logs', async () => {
    const id = await submit({
      kind: 'AdapterMerge',
      spec: {
        inputs: [
          { repository: 'nlp/bot', version: 1 },
          { repository: 'nlp/bot', version: 2 },
        ],
        method: 'cat',
        output: { repository: 'nlp/cat' },
      },
    });
    const job = await until(id, (j) => j.status === 'succeeded' || j.status === 'failed');
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    assert.equal(job.attempts, 1);
    assert.equal(job.progress.output.ref, 'nlp/cat@1');
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/cat/versions/1');
    assert.equal(v.job, id);
    assert.equal(v.rank, 16);
    // The job can end before the executor has shipped the worker's last lines: wait for its end line.
    let logs: any;
    for (const end = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 100))) {
      logs = (await api('ada', 'GET', `/v1/jobs/${id}/logs`)).body;
      if (logs.lines.some((l: any) => /worker ended/.test(l.text)) || Date.now() > end) break;
    }
    const texts = logs.lines.map((l: any) => l.text).join('\n');
    assert.match(texts, /attempt 1 of 4/); // retry.backoffLimit defaults to 3
    assert.match(texts, /"event":"succeeded"/);
    assert.match(texts, /worker ended: exit status 0/);
    const { body: tail } = await api('ada', 'GET', `/v1/jobs/${id}/logs?since=${logs.next}`);
    assert.deepEqual(tail.lines, []);
  });

  it('fails a job with bad input at once, without retrying', async () => {
    const id = await submit({
      kind: 'AdapterMerge',
      spec: {
        inputs: [{ repository: 'nlp/bot', version: 99 }],
        method: 'linear',
        retry: { backoffLimit: 3 },
        output: { repository: 'nlp/none' },
      },
    });
    const job = await until(id, (j) => j.status === 'failed');
    assert.equal(job.attempts, 1);
    assert.match(job.error, /has no version 99/);
  });

  it('retries a failing worker with backoff until the retry limit, then marks the job failed', async () => {
    // A work root that is a file: every attempt fails inside the worker (an internal error, retried).
    const workRootFile = join(tmp, 'not-a-directory');
    writeFileSync(workRootFile, '');
    await executor.close();
    executor = await start(workRootFile);
    try {
      const id = await submit({
        kind: 'CompressionJob',
        spec: {
          source: { adapter: { repository: 'nlp/bot' } },
          servingMaxRank: 8,
          retry: { backoffLimit: 1 },
          output: { repository: 'nlp/bot' },
        },
      });
      const job = await until(id, (j) => j.status === 'failed');
      assert.equal(job.attempts, 2);
      assert.match(job.error, /after 2 attempts/);
      const { body: logs } = await api('ada', 'GET', `/v1/jobs/${id}/logs`);
      assert.deepEqual([...new Set(logs.lines.map((l: any) => l.attempt))], [1, 2]);
    } finally {
      await executor.close();
      executor = await start();
    }
  });

  it('cancels a running job: the worker is stopped and the job stays cancelled', async () => {
    // An input whose adapter_config.json is a FIFO nobody writes: the worker blocks reading it.
    const stuck = join(tmp, 'stuck');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(stuck);
    await run('mkfifo', [join(stuck, 'adapter_config.json')]);
    const id = await submit({
      kind: 'AdapterMerge',
      spec: { inputs: [{ path: stuck }], method: 'linear', output: { repository: 'nlp/stuck' } },
    });
    await until(id, (j) => j.status === 'running' && j.progress.stage === 'fetching inputs');
    const { status } = await api('ada', 'POST', `/v1/jobs/${id}:cancel`);
    assert.equal(status, 200);
    const { body: logs } = await (async () => {
      const end = Date.now() + 30_000;
      for (;;) {
        const r = await api('ada', 'GET', `/v1/jobs/${id}/logs`);
        if (r.body.lines.some((l: any) => /worker ended: killed by SIGTERM/.test(l.text)) || Date.now() > end) return r;
        await new Promise((res) => setTimeout(res, 200));
      }
    })();
    assert.ok(
      logs.lines.some((l: any) => /killed by SIGTERM/.test(l.text)),
      JSON.stringify(logs.lines),
    );
    const { body: job } = await api('ada', 'GET', `/v1/jobs/${id}`);
    assert.equal(job.status, 'cancelled');
    assert.equal(await reg.prisma.repository.count({ where: { name: 'stuck' } }), 0);
  });
});
