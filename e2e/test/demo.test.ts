/**
 * The one-command demo's script (scripts/lib/demo.ts, what `npm start` runs after starting
 * the services) against a real registry and local executor: the base is pretrained (its
 * held-out corpus loss drops), both task adapters are trained through REST-submitted
 * AdapterJobs and measurably improve eval loss and task accuracy on unseen prompts, and
 * the merge, compressions and lineage come out. Numbers are parsed from what it prints.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { bootstrapLocalAdmin } from '../../registry-api/src/bootstrap.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { type Executor, startExecutor } from '../../worker/src/executor/executor.ts';
import { serviceEnv } from '../src/env.ts';

const root = join(import.meta.dirname, '..', '..');
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-demo-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const redisUrl = `${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/9`;
let reg: TestRegistry;
let executor: Executor;
const tokenFile = join(tmp, 'admin-token');

before(async () => {
  reg = await startRegistry({ redis: new Redis(redisUrl) });
  await reg.redis.flushdb();
  // What `npm start` bootstraps: team demo, its admin, the admin's token in a file.
  assert.ok(await bootstrapLocalAdmin(reg.prisma, tokenFile));
  const token = readFileSync(tokenFile, 'utf8').trim();
  executor = await startExecutor({
    redisUrl,
    registryUrl: reg.base,
    token,
    concurrency: 2,
    logsDir: join(tmp, 'jobs'),
    workRoot: join(tmp, 'work'),
  });
  await executor.ready();
});
after(() => executor?.close());

describe('npm start: the demo', () => {
  it('pretrains a base, trains two adapters with a measured improvement, merges, compresses and traces lineage', async () => {
    const work = join(tmp, 'state', 'demo');
    mkdirSync(work, { recursive: true });
    const { stderr } = await promisify(execFile)(
      process.execPath,
      [join(root, 'scripts', 'lib', 'demo.ts'), reg.base, join(root, 'crds', 'examples', 'adapterjob-train-lora.yaml'), tokenFile, work],
      { cwd: root, maxBuffer: 1 << 26, env: { ...process.env, LOWRANK_LOG_LEVEL: 'warn' } },
    );
    const lines = stderr.split('\n').filter((l) => !l.startsWith('{'));
    const text = lines.join('\n');
    const pre = /held-out corpus loss ([\d.]+) -> ([\d.]+)/.exec(text);
    assert.ok(pre, text);
    assert.ok(Number(pre[2]) < 0.5 * Number(pre[1]), `pretraining: ${pre[0]}`);
    for (const op of ['next', 'prev']) {
      const m = new RegExp(
        `demo/${op}-digit@\\d+: held-out eval loss ([\\d.]+) -> ([\\d.]+).*task accuracy on (\\d+) unseen prompts \\(greedy\\): base ([\\d.]+)% -> adapter ([\\d.]+)%`,
      ).exec(text);
      assert.ok(m, `${op}: ${text}`);
      const [, before, afterLoss, n, accBefore, accAfter] = m.map(Number) as number[];
      assert.ok((afterLoss as number) < 0.2 * (before as number), `${op} eval loss ${before} -> ${afterLoss}`);
      assert.ok((n as number) >= 100);
      assert.ok(
        (accAfter as number) >= 90 && (accAfter as number) > (accBefore as number) + 50,
        `${op} accuracy ${accBefore}% -> ${accAfter}%`,
      );
    }
    assert.match(text, /merged: demo\/merged-adapter@1 \(svd, rank 16 from 8 \+ 8.*task accuracy: next [\d.]+%, prev [\d.]+%/);
    assert.match(text, /compressed: demo\/next-digit@2 \(rank 8 -> \d+ at 90% energy/);
    assert.match(
      text,
      /└─ compressed_from demo\/merged-adapter@1\n {3}├─ merged_from \(1\) demo\/next-digit@1\n {3}│ {2}└─ trained_from demo\/tiny-llama@1/,
    );
    assert.match(text, new RegExp(`lineage in the web catalog: ${reg.base}/repos/demo/merged-adapter/versions/2/lineage`));
    const { body } = await fetch(`${reg.base}/v1/repos/demo/tiny-llama/versions/1`, {
      headers: { authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}` },
    }).then(async (r) => ({ body: (await r.json()) as { methodMetadata: { kind: string; method: string; lossCurve: unknown[] } } }));
    assert.equal(body.methodMetadata.kind, 'training');
    assert.equal(body.methodMetadata.method, 'relora');
    assert.equal(body.methodMetadata.lossCurve.length, 4);
  });
});
