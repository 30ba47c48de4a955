/**
 * The operator's pure parts without a cluster: the Job it builds from each example, how it
 * reads a Job's outcome, merge-input waiting, condition bookkeeping, the work queue and
 * the configuration errors. The same code runs against the real apiserver in
 * e2e/test/operator.test.ts.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { admit } from '../src/admission.ts';
import { setCondition } from '../src/conditions.ts';
import { ConfigError, loadConfig } from '../src/config.ts';
import { blockingProducers } from '../src/inputs.ts';
import { buildConfigMap, buildJob, RESULT_FILE, type Resource, SPEC_FILE } from '../src/job-spec.ts';
import { jobName } from '../src/kinds.ts';
import { observeJob, versionNumber } from '../src/outcome.ts';
import { registryJobId, toStatusProgress } from '../src/progress.ts';
import { WorkQueue } from '../src/queue.ts';

const examples = join(import.meta.dirname, '..', '..', 'crds', 'examples');
const cfg = loadConfig({ LOWRANK_REGISTRY_URL: 'http://registry:8080' });

function load(file: string, extra: Partial<Resource['metadata']> = {}): Resource {
  const doc = parse(readFileSync(join(examples, file), 'utf8'));
  const a = admit(doc);
  assert.ok(a.accepted, file);
  return { ...(a.resource as unknown as Resource), metadata: { ...doc.metadata, uid: 'u-1', generation: 1, ...extra } };
}

describe('the Job built for each example', () => {
  for (const file of readdirSync(examples).filter((f) => f.endsWith('.yaml'))) {
    it(file, () => {
      const cr = load(file);
      const name = jobName(cr.kind, cr.metadata.name);
      const job = buildJob(cr, name, cfg);
      const pod = job.spec?.template.spec;
      const c = pod?.containers[0];
      assert.equal(job.metadata?.ownerReferences?.[0]?.uid, 'u-1');
      assert.equal(job.metadata?.ownerReferences?.[0]?.controller, true);
      assert.deepEqual(c?.command, ['node', 'worker/src/cli.ts', 'run']);
      assert.deepEqual(c?.args, ['--spec', SPEC_FILE]);
      assert.equal(c?.terminationMessagePath, RESULT_FILE);
      assert.equal(c?.env?.find((e) => e.name === 'LOWRANK_RESULT_FILE')?.value, RESULT_FILE);
      assert.equal(pod?.restartPolicy, 'Never');
      assert.equal(c?.securityContext?.readOnlyRootFilesystem, true);
      assert.equal(pod?.securityContext?.runAsNonRoot, true);
      const gpus = (cr.spec.resources?.gpu?.count as number | undefined) ?? 1;
      assert.equal(c?.resources?.limits?.['nvidia.com/gpu'], gpus > 0 ? String(gpus) : undefined);
      if (cr.spec.resources?.gpu?.type) assert.equal(pod?.nodeSelector?.['nvidia.com/gpu.product'], cr.spec.resources.gpu.type);
      assert.equal(job.spec?.backoffLimit, cr.spec.retry?.backoffLimit ?? 3);
      assert.equal(job.spec?.suspend, false);
      // The spec file is the resource the worker validates again: same kind and spec.
      const file2 = JSON.parse(buildConfigMap(cr, name).data?.['resource.json'] ?? '{}');
      assert.equal(file2.kind, cr.kind);
      assert.deepEqual(file2.spec, cr.spec);
      assert.equal(admit(file2).accepted, true);
      // Trans-LoRA jobs (mode transfer, or train with transferable) get the seed key from an optional Secret.
      const seedKey = c?.env?.find((e) => e.name === 'LOWRANK_SEED_KEY');
      const transfer =
        cr.kind === 'AdapterJob' &&
        (cr.spec.mode === 'transfer' || (cr.spec.training as { transferable?: boolean } | undefined)?.transferable === true);
      assert.deepEqual(
        seedKey?.valueFrom?.secretKeyRef,
        transfer ? { name: 'lowrank-seed-key', key: 'key', optional: true } : undefined,
        file,
      );
    });
  }

  it('names are deterministic and fit a label value', () => {
    assert.equal(jobName('AdapterJob', 'support-bot'), 'aj-support-bot');
    const long = jobName('CompressionJob', 'x'.repeat(200));
    assert.ok(long.length <= 63);
    assert.equal(long, jobName('CompressionJob', 'x'.repeat(200)));
    assert.notEqual(long, jobName('CompressionJob', `${'x'.repeat(199)}y`));
  });
});

const job = (status: V1Job['status'], suspend = false): V1Job => ({ metadata: { name: 'aj-x' }, spec: { suspend, template: {} }, status });
const pod = (phase: string, state: object, created = '2026-01-01T00:00:00Z'): V1Pod => ({
  metadata: { name: `p-${phase}`, creationTimestamp: new Date(created) },
  status: { phase, containerStatuses: [{ name: 'worker', image: '', imageID: '', ready: false, restartCount: 0, state }] },
});

describe('reading the outcome of a Job', () => {
  it('Succeeded with the version from the result file', () => {
    const msg = JSON.stringify({ status: 'succeeded', output: { repository: 'team/a', version: 'v7', ref: 'team/a@v7' } });
    const o = observeJob(
      job({ succeeded: 1, conditions: [{ type: 'Complete', status: 'True' }] }),
      [pod('Succeeded', { terminated: { exitCode: 0, message: msg } })],
      'http://r/',
    );
    assert.equal(o.phase, 'Succeeded');
    assert.deepEqual(o.outputVersion, { repository: 'team/a', version: 7, uri: 'http://r/v1/repos/team/a/versions/7' });
  });
  it('a zero exit without a result file is a failure, not a silent success', () => {
    const o = observeJob(
      job({ conditions: [{ type: 'Complete', status: 'True' }] }),
      [pod('Succeeded', { terminated: { exitCode: 0 } })],
      'http://r',
    );
    assert.equal(o.phase, 'Failed');
    assert.equal(o.reason, 'NoResult');
  });
  it('Failed with the reason of the newest failed attempt', () => {
    const older = pod(
      'Failed',
      { terminated: { exitCode: 75, message: JSON.stringify({ status: 'failed', reason: 'Old' }) } },
      '2026-01-01T00:00:00Z',
    );
    const newer = pod(
      'Failed',
      { terminated: { exitCode: 75, message: JSON.stringify({ status: 'failed', reason: 'New', message: 'm' }) } },
      '2026-01-01T00:01:00Z',
    );
    const o = observeJob(
      job({ failed: 2, conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }] }),
      [older, newer],
      'http://r',
    );
    assert.equal(o.phase, 'Failed');
    assert.equal(o.reason, 'New');
    assert.equal(o.attempts, 2);
    assert.match(o.message, /exit code 75.*BackoffLimitExceeded/);
  });
  it('Failed without a result file keeps the Job reason and the log tail', () => {
    const o = observeJob(
      job({ failed: 1, conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded', message: 'too slow' }] }),
      [pod('Failed', { terminated: { exitCode: 137, message: 'killed\n' } })],
      'http://r',
    );
    assert.equal(o.reason, 'DeadlineExceeded');
    assert.match(o.message, /too slow \(exit code 137\): killed/);
  });
  it('Running, Pending with the waiting reason, Suspended', () => {
    assert.equal(observeJob(job({ active: 1 }), [pod('Running', { running: {} })], 'http://r').phase, 'Running');
    const p = observeJob(
      job({ active: 1 }),
      [pod('Pending', { waiting: { reason: 'CreateContainerConfigError', message: 'no secret' } })],
      'http://r',
    );
    assert.deepEqual([p.phase, p.reason], ['Pending', 'CreateContainerConfigError']);
    assert.equal(observeJob(job({}, true), [], 'http://r').phase, 'Suspended');
  });
  it('between a pod ending and the Job verdict: Completing, Retrying or Finishing, never back to Pending/JobCreated', () => {
    const done = observeJob(job({ active: 0 }), [pod('Succeeded', { terminated: { exitCode: 0 } })], 'http://r');
    assert.deepEqual([done.phase, done.reason], ['Running', 'Completing']);
    const msg = JSON.stringify({ status: 'failed', reason: 'RegistryUnavailable' });
    const retry = observeJob(job({ failed: 1 }), [pod('Failed', { terminated: { exitCode: 75, message: msg } })], 'http://r');
    assert.deepEqual([retry.phase, retry.reason], ['Pending', 'Retrying']);
    assert.match(retry.message, /attempt 1 failed \(exit code 75, RegistryUnavailable\)/);
    const failing = observeJob(
      job({ failed: 1, conditions: [{ type: 'FailureTarget', status: 'True', reason: 'PodFailurePolicy' }] }),
      [pod('Failed', { terminated: { exitCode: 65 } })],
      'http://r',
    );
    assert.deepEqual([failing.phase, failing.reason], ['Running', 'Finishing']);
  });
  it('versions: v3, 3 and "3" are 3; junk is refused', () => {
    assert.deepEqual(
      [versionNumber('v3'), versionNumber(3), versionNumber('3'), versionNumber('latest'), versionNumber(0)],
      [3, 3, 3, undefined, undefined],
    );
  });
});

describe('merge inputs produced by other resources', () => {
  const merge = {
    kind: 'AdapterMerge',
    metadata: { name: 'm', namespace: 'ns', uid: 'u' },
    spec: { inputs: [{ repository: 'ns/a' }, { repository: 'ns/b', tag: 'best' }, { repository: 'ns/c', version: 2 }] },
  } as unknown as Resource;
  const producer = (name: string, repository: string, phase: string, tags?: string[]) =>
    ({
      kind: 'AdapterJob',
      metadata: { name, namespace: 'ns', uid: name },
      spec: { output: { repository, tags } },
      status: { phase },
    }) as unknown as Resource;
  it('waits for unfinished producers of latest or of the tag; not for pinned versions or finished ones', () => {
    const blockers = blockingProducers(merge, [
      producer('a1', 'ns/a', 'Running'),
      producer('a2', 'ns/a', 'Succeeded'),
      producer('b1', 'ns/b', 'Pending', ['other']),
      producer('b2', 'ns/b', 'Pending', ['best']),
      producer('c1', 'ns/c', 'Running'),
      { ...producer('x', 'ns/a', 'Running'), metadata: { name: 'x', namespace: 'elsewhere', uid: 'x' } } as Resource,
    ]);
    assert.deepEqual(
      blockers.map((b) => b.name),
      ['a1', 'b2'],
    );
  });
});

describe('conditions', () => {
  it('lastTransitionTime moves only when the status flips', () => {
    let list = setCondition([], { type: 'Running', status: 'False', reason: 'A', message: '' }, 't1');
    list = setCondition(list, { type: 'Running', status: 'False', reason: 'B', message: 'x' }, 't2');
    assert.equal(list[0]?.lastTransitionTime, 't1');
    assert.equal(list[0]?.reason, 'B');
    list = setCondition(list, { type: 'Running', status: 'True', reason: 'C', message: '' }, 't3');
    assert.equal(list[0]?.lastTransitionTime, 't3');
    assert.equal(list.length, 1);
  });
});

describe('work queue', () => {
  it('never runs one key twice at once, re-runs it after an event during processing, and backs off on errors', async () => {
    const runs: string[] = [];
    let active = 0;
    let maxActive = 0;
    let failOnce = true;
    const q = new WorkQueue({
      concurrency: 4,
      handler: async (k) => {
        active++;
        maxActive = Math.max(maxActive, active);
        runs.push(k);
        await new Promise((r) => setTimeout(r, 30));
        active--;
        if (k === 'b' && failOnce) {
          failOnce = false;
          throw new Error('boom');
        }
        return {};
      },
      onError: () => {},
    });
    q.add('a');
    q.add('a'); // deduplicated while queued
    await new Promise((r) => setTimeout(r, 5));
    q.add('a'); // during processing: once more afterwards
    q.add('b');
    await new Promise((r) => setTimeout(r, 600));
    assert.deepEqual(runs.filter((k) => k === 'a').length, 2);
    assert.deepEqual(runs.filter((k) => k === 'b').length, 2); // failed, retried after 200 ms
    assert.ok(maxActive <= 2);
    await q.drain(100);
  });
});

describe('progress from the registry job record', () => {
  it('maps the worker report to status.progress, derives percent, drops junk', () => {
    assert.deepEqual(toStatusProgress({ step: 30, totalSteps: 120, loss: 1.25, tokensPerSecond: 900, etaSeconds: 61.4, extra: 'x' }), {
      step: 30,
      totalSteps: 120,
      percent: 25,
      loss: 1.25,
      tokensPerSecond: 900,
      etaSeconds: 61,
    });
    assert.deepEqual(toStatusProgress({ step: -1, percent: 250, loss: 'high' }), { percent: 100 });
    assert.equal(toStatusProgress({}), undefined);
  });
  it('takes the id only from a well-formed annotation', () => {
    assert.equal(
      registryJobId({ 'lora.lowrank.dev/registry-job': '0b9e1c7a-1111-4222-8333-944455556666' }),
      '0b9e1c7a-1111-4222-8333-944455556666',
    );
    assert.equal(registryJobId({ 'lora.lowrank.dev/registry-job': '../../admin' }), undefined);
  });
});

describe('configuration', () => {
  it('names the variable to fix', () => {
    assert.throws(
      () => loadConfig({}),
      (e: Error) => e instanceof ConfigError && /LOWRANK_REGISTRY_URL is not set/.test(e.message),
    );
    assert.throws(
      () => loadConfig({ LOWRANK_REGISTRY_URL: 'http://r', LOWRANK_WORKER_COMMAND: '"node"' }),
      /LOWRANK_WORKER_COMMAND must be a non-empty array/,
    );
    assert.throws(
      () => loadConfig({ LOWRANK_REGISTRY_URL: 'http://r', LOWRANK_CONCURRENCY: '0' }),
      /LOWRANK_CONCURRENCY must be a whole number from 1 to 64/,
    );
  });
});
