/**
 * An AdapterJob train through `lora-worker run` on the CUDA device engine, without a GPU:
 * the emulated library (`make emu`) as the CUDA backend (LOWRANK_BACKEND=cuda, a fake empty
 * libcuda.so.1), against a real registry. The startup line, the `train_engine` line and
 * the version's methodMetadata say engine cuda, and the loss curve (train losses on the
 * device, eval losses on the CPU engine after the adapter is copied back) equals a
 * LOWRANK_BACKEND=cpu run's within METHODS §8.1's 1e-4, for LoRA, for DoRA with dropout
 * (PEFT's W·drop(x) path) and for LoRA-SB (a trained r×r core between frozen A and B).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { seedNlpTeam } from './support/registry-users.ts';
import { writeTaskJsonl, writeTinyBase } from './support/tiny-base.ts';
import { runWorker } from './support/worker-cli.ts';

const exec = promisify(execFile);
const native = join(import.meta.dirname, '..', 'native');
const out = join(native, 'build', 'cuda');
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-device-train-job-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let reg: TestRegistry;
const tok = { admin: '', ada: '' };
const baseDir = join(tmp, 'base');
const dataPath = join(tmp, 'task.jsonl');
const redisUrl = `${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/9`;
const emulated: Record<string, string> = {
  LOWRANK_BACKEND: 'cuda',
  LOWRANK_CUDA_LIBRARY: join(out, 'liblowrank_cuda_emu.so'),
  LD_LIBRARY_PATH: tmp,
};

function spec(repo: string, method: Record<string, unknown> = {}): unknown {
  return {
    kind: 'AdapterJob',
    metadata: { name: 'device-next-digit' },
    spec: {
      mode: 'train',
      baseModel: { name: 'tiny/llama', path: baseDir, dtype: 'f32' },
      dataset: { path: dataPath, evalFraction: 0.1, maxSeqLength: 16, maxSamples: 60 },
      method: { type: 'lora', rank: 4, alpha: 8, dropout: 0.1, targetModules: ['q_proj', 'v_proj', 'down_proj'], ...method },
      optimizer: { lr: 0.01 },
      schedule: { type: 'cosine', warmupSteps: 1 },
      training: { maxSteps: 5, microBatchSize: 2, gradientAccumulation: 2, logEvery: 1, precision: 'f32' },
      output: { repository: repo, tags: ['v1'] },
      seed: 7,
    },
  };
}

const lines = (stdout: string): any[] =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));

async function version(repo: string): Promise<any> {
  const r = await fetch(`${reg.base}/v1/repos/${repo}/versions/v1`, { headers: { authorization: `Bearer ${tok.ada}` } });
  assert.equal(r.status, 200);
  return r.json();
}

before(async () => {
  await exec('make', ['--no-print-directory', '-C', join(native, 'src', 'cuda'), 'emu', `OUT=${out}`, '-j', '2']);
  // FAKE: an empty libcuda.so.1 stands in for the NVIDIA driver, so the addon goes on to load the library.
  writeFileSync(join(tmp, 'fake.c'), 'int lowrank_fake_nvidia_driver;\n');
  await exec('cc', ['-shared', '-fPIC', '-o', join(tmp, 'libcuda.so.1'), join(tmp, 'fake.c')]);
  writeTinyBase(baseDir);
  writeTaskJsonl(dataPath, 80, 5);
  reg = await startRegistry({ redis: new Redis(redisUrl) });
  await reg.redis.flushdb();
  Object.assign(tok, await seedNlpTeam(reg.prisma));
});

/** Trains `method` with LOWRANK_BACKEND=cpu and on the emulated device engine; both curves must agree. */
async function deviceEqualsCpu(name: string, method: Record<string, unknown>): Promise<void> {
  const cpu = await runWorker(spec(`nlp/${name}-cpu`, method), {
    registry: reg.base,
    token: tok.ada,
    tmp,
    env: { LOWRANK_BACKEND: 'cpu' },
  });
  assert.equal(cpu.code, 0, cpu.stderr + cpu.stdout);
  const dev = await runWorker(spec(`nlp/${name}-cuda`, method), { registry: reg.base, token: tok.ada, tmp, env: emulated });
  assert.equal(dev.code, 0, dev.stderr + dev.stdout);
  const start = lines(dev.stdout).find((l) => l.event === 'native_backend');
  assert.equal(start?.backend, 'cuda');
  assert.equal(start?.engine, 'cuda');
  assert.match(String(start?.device), /^CPU emulation of the CUDA kernels/);
  assert.deepEqual(
    lines(dev.stdout)
      .filter((l) => l.event === 'train_engine')
      .map((l) => [l.engine, l.reason, l.precision, l.requestedPrecision]),
    [['cuda', undefined, 'f32', 'f32']],
  );
  const cpuLine = lines(cpu.stdout).find((l) => l.event === 'train_engine');
  assert.equal(cpuLine?.engine, 'cpu');
  assert.match(String(cpuLine?.reason), /^the backend is the CPU \(LOWRANK_BACKEND=cpu\)/);
  const [a, b] = [await version(`nlp/${name}-cpu`), await version(`nlp/${name}-cuda`)];
  assert.equal(a.methodMetadata.engine, 'cpu');
  assert.equal(b.methodMetadata.engine, 'cuda');
  assert.equal(a.methodMetadata.computePrecision, 'f32');
  assert.equal(b.methodMetadata.computePrecision, 'f32');
  const ca = a.methodMetadata.lossCurve as { step: number; loss: number; evalLoss?: number }[];
  const cb = b.methodMetadata.lossCurve as typeof ca;
  assert.deepEqual(
    cb.map((p) => p.step),
    ca.map((p) => p.step),
  );
  assert.ok(ca.length >= 6, 'step 0 and 5 steps');
  let worst = 0;
  for (const [i, p] of ca.entries()) {
    const q = cb[i] as (typeof ca)[number];
    for (const [x, y] of [
      [q.loss, p.loss],
      [q.evalLoss, p.evalLoss],
    ] as const) {
      if (y === undefined) {
        assert.equal(x, undefined);
        continue;
      }
      const e = Math.abs((x as number) - y) / Math.abs(y);
      worst = Math.max(worst, e);
      assert.ok(e <= 1e-4, `step ${p.step}: ${x} vs ${y}`);
    }
  }
  console.log(`# measured ${name}: worst loss-curve rel (device vs CPU engine, 5 steps): ${worst.toExponential(2)}`);
  assert.ok(ca.at(-1)?.loss !== ca[1]?.loss, 'the adapter trained');
}

describe('lora-worker run on the CUDA device engine (emulated)', () => {
  it('trains on the device engine and its loss curve equals the CPU engine run', { timeout: 600_000 }, async () => {
    await deviceEqualsCpu('device', {});
  });

  it("DoRA with dropout (PEFT's W·drop(x) path) trains on the device engine, equal to the CPU engine run", {
    timeout: 600_000,
  }, async () => {
    await deviceEqualsCpu('device-dora', { type: 'dora' });
  });

  it('LoRA-SB (a trained r×r core; its init on the CPU engine) trains on the device engine, equal to the CPU engine run', {
    timeout: 600_000,
  }, async () => {
    await deviceEqualsCpu('device-lora-sb', { type: 'lora-sb', alpha: undefined, loraSb: { samples: 8, niter: 2 } });
  });
});
