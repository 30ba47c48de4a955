/**
 * The operator on the real test cluster (kube-apiserver, etcd, controller-manager and
 * scheduler built from the Go module proxy; see scripts/lib/services/kube.ts): kubectl
 * applies the shipped examples, the operator makes Jobs, the real Job controller makes
 * pods, the real scheduler binds them to the test node agent (the only fake), which runs
 * the worker command as a local process.
 *
 * The worker here is e2e/src/worker-standin.ts, a STAND-IN honouring the `lora-worker run`
 * contract whose annotations (standin.lowrank.dev/*) make it sleep or fail on demand, so
 * every example and failure mode runs in seconds; e2e/test/operator-worker.test.ts runs
 * the real `lora-worker run` against a real registry.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BatchV1Api, type V1Job, type V1Pod } from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import { createToken } from '../../registry-api/src/auth/tokens.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { apis, kubeConfig, kubectl, type Proc, ROOT, runId, startAgent, startOperator, waitFor } from '../src/cluster.ts';

const id = runId();
const ns = `e2e-op-${id}`;
const kc = kubeConfig();
const { core, custom } = apis(kc);
const batch = kc.makeApiClient(BatchV1Api);
const nodeLabel = { 'lowrank.dev/e2e-run': id, 'nvidia.com/gpu.product': 'nvidia-h100-80gb' };

let agent: Proc | undefined;
const moreAgents: Proc[] = [];
let operator: Proc | undefined;
let standby: Proc | undefined;
/** The real registry (PostgreSQL, Redis, MinIO) the worker reports progress to. */
let reg: TestRegistry;
let registryToken = '';

// Cleanup at top level (an after() inside before() would run at once).
after(async () => {
  // Resources first, while the operator runs to release their finalizers.
  await kubectl(['-n', ns, 'delete', 'adapterjobs,adaptermerges,compressionjobs', '--all', '--timeout=60s']);
  await standby?.stop();
  await operator?.stop();
  await agent?.stop();
  for (const a of moreAgents) await a.stop();
  await kubectl(['delete', 'namespace', ns, '--wait=false']);
  await kubectl(['delete', 'node', '-l', `lowrank.dev/e2e-run=${id}`, '--wait=false']);
  await kubectl(['delete', 'priorityclass', `training-high`, '--wait=false']);
});

const plural = { AdapterJob: 'adapterjobs', AdapterMerge: 'adaptermerges', CompressionJob: 'compressionjobs' } as const;
type Kind = keyof typeof plural;

interface Cr {
  metadata: { name: string; uid: string; finalizers?: string[] };
  status?: {
    phase?: string;
    conditions?: {
      type: string;
      status: string;
      reason: string;
      message: string;
      observedGeneration?: number;
      lastTransitionTime?: string;
    }[];
    outputVersion?: { repository: string; version: number; uri?: string };
    attempts?: number;
    progress?: { step?: number; totalSteps?: number; percent?: number; loss?: number };
    progressText?: string;
    jobName?: string;
    message?: string;
  };
}

/** An example manifest, moved to this run's namespace and pinned to this run's node. */
function example(file: string, name: string, annotations: Record<string, string> = {}, spec: Record<string, unknown> = {}) {
  const doc = parse(readFileSync(join(ROOT, 'crds/examples', file), 'utf8')) as {
    metadata: Record<string, unknown>;
    spec: Record<string, unknown>;
  };
  doc.metadata = { name, namespace: ns, annotations };
  doc.spec = { ...doc.spec, nodeSelector: { 'lowrank.dev/e2e-run': id }, ...spec };
  return doc;
}

async function apply(doc: unknown): Promise<void> {
  const r = await kubectl(['apply', '-f', '-'], stringify(doc));
  assert.equal(r.code, 0, `kubectl apply failed: ${r.stderr}`);
}

async function getCr(kind: Kind, name: string): Promise<Cr | undefined> {
  try {
    return (await custom.getNamespacedCustomObject({
      group: 'lora.lowrank.dev',
      version: 'v1alpha1',
      namespace: ns,
      plural: plural[kind],
      name,
    })) as Cr;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}

const waitPhase = (kind: Kind, name: string, phase: string, timeoutMs = 60_000) =>
  waitFor(
    `${kind}/${name} phase ${phase}`,
    async () => {
      const cr = await getCr(kind, name);
      return cr?.status?.phase === phase ? cr : undefined;
    },
    timeoutMs,
  );

const podsOf = async (crName: string): Promise<V1Pod[]> =>
  (await core.listNamespacedPod({ namespace: ns, labelSelector: `lora.lowrank.dev/name=${crName}` })).items;

const jobsOf = async (crName: string): Promise<V1Job[]> =>
  (await batch.listNamespacedJob({ namespace: ns, labelSelector: `lora.lowrank.dev/name=${crName}` })).items;

const cond = (cr: Cr, type: string) => cr.status?.conditions?.find((c) => c.type === type);

before(async () => {
  const crds = await kubectl(['apply', '--server-side', '--force-conflicts', '-f', join(ROOT, 'crds/bases')]);
  assert.equal(crds.code, 0, crds.stderr);
  for (const crd of ['adapterjobs', 'adaptermerges', 'compressionjobs']) {
    const r = await kubectl(['wait', '--for=condition=Established', `crd/${crd}.lora.lowrank.dev`, '--timeout=30s']);
    assert.equal(r.code, 0, r.stderr);
  }
  assert.equal((await kubectl(['create', 'namespace', ns])).code, 0);
  reg = await startRegistry();
  const org = await reg.prisma.organization.create({ data: { name: `e2e-${id}` } });
  const team = await reg.prisma.team.create({ data: { name: 'nlp-team', organizationId: org.id } });
  const user = await reg.prisma.user.create({ data: { handle: `op-${id}`, memberships: { create: { teamId: team.id } } } });
  registryToken = (await createToken(reg.prisma, { userId: user.id, name: 'e2e', scope: 'write' })).token;
  const secret = await kubectl([
    '-n',
    ns,
    'create',
    'secret',
    'generic',
    'lowrank-registry-token',
    `--from-literal=token=${registryToken}`,
  ]);
  assert.equal(secret.code, 0, secret.stderr);
  agent = startAgent(id, nodeLabel);
  operator = startOperator(id, ns, { LOWRANK_REGISTRY_URL: reg.base, LOWRANK_OPERATOR_TOKEN: registryToken });
  await waitFor('the test node to be Ready', async () => {
    const node = await core.readNode({ name: `e2e-node-${id}` });
    return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && !node.spec?.taints?.length;
  });
});

describe('operator on a real kube-apiserver', () => {
  it('the apiserver refuses a bad manifest with the CRD schema and CEL messages', async () => {
    const bad = example('adapterjob-train-lora.yaml', 'bad-train');
    delete (bad.spec as Record<string, unknown>).dataset; // CEL: mode train needs baseModel, dataset and method
    (bad.spec.method as Record<string, unknown>).rank = 0; // schema: minimum 1
    const r = await kubectl(['apply', '-f', '-'], stringify(bad));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /mode train needs baseModel, dataset and method/);
    assert.match(r.stderr, /spec\.method\.rank: Invalid value: 0: spec\.method\.rank in body should be greater than or equal to 1/);
    assert.equal(await getCr('AdapterJob', 'bad-train'), undefined);
  });

  it('kubectl apply of an example runs a Job through the agent to Succeeded with the output version', async () => {
    await apply(example('adapterjob-train-lora.yaml', 'train-ok'));
    const cr = await waitPhase('AdapterJob', 'train-ok', 'Succeeded');
    assert.deepEqual(
      { repository: cr.status?.outputVersion?.repository, version: cr.status?.outputVersion?.version },
      { repository: 'nlp-team/support-bot', version: 1 },
    );
    for (const t of ['Accepted', 'Succeeded']) assert.equal(cond(cr, t)?.status, 'True', `${t}: ${JSON.stringify(cond(cr, t))}`);
    for (const t of ['Running', 'Failed', 'Suspended']) assert.equal(cond(cr, t)?.status, 'False');
    for (const c of cr.status?.conditions ?? []) {
      assert.equal(c.observedGeneration, 1);
      assert.ok(c.lastTransitionTime && !Number.isNaN(Date.parse(c.lastTransitionTime)));
    }
    assert.ok(cr.metadata.finalizers?.includes('lora.lowrank.dev/cleanup'));

    // One Job, owned by the resource, carrying the spec's resources and scheduling.
    const jobs = await jobsOf('train-ok');
    assert.equal(jobs.length, 1);
    const job = jobs[0] as V1Job;
    assert.deepEqual(
      job.metadata?.ownerReferences?.map((o) => [o.kind, o.name, o.uid, o.controller]),
      [['AdapterJob', 'train-ok', cr.metadata.uid, true]],
    );
    const pod = job.spec?.template.spec;
    const c0 = pod?.containers[0];
    assert.equal(c0?.resources?.limits?.['nvidia.com/gpu'], '1');
    assert.equal(c0?.resources?.limits?.memory, '64Gi');
    assert.equal(pod?.nodeSelector?.['nvidia.com/gpu.product'], 'nvidia-h100-80gb');
    assert.deepEqual(JSON.parse(JSON.stringify(pod?.tolerations)), [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    assert.equal(job.spec?.backoffLimit, 2);
    assert.equal(job.spec?.activeDeadlineSeconds, 86400);
    assert.equal(c0?.env?.find((e) => e.name === 'LOWRANK_TOKEN')?.valueFrom?.secretKeyRef?.name, 'lowrank-registry-token');

    // The pod really ran the worker command, with the token from the Secret.
    const pods = await podsOf('train-ok');
    assert.equal(pods.length, 1);
    assert.equal(pods[0]?.status?.phase, 'Succeeded');
    assert.equal(pods[0]?.spec?.nodeName, `e2e-node-${id}`);

    // kubectl shows the phase and version in the printer columns, and the Events in describe.
    const table = await kubectl(['-n', ns, 'get', 'aj', 'train-ok']);
    assert.match(table.stdout, /train-ok\s+train\s+lora\s+Succeeded\s+100%\s+1\s/);
    const describe = await kubectl(['-n', ns, 'describe', 'aj', 'train-ok']);
    assert.match(describe.stdout, /JobCreated\s+.*created Job aj-train-ok/);
    assert.match(describe.stdout, /Succeeded\s+.*pushed nlp-team\/support-bot version 1/);
  });

  it('progress pushed by the worker through the registry shows in status (step/total, loss), never scraped from logs', async () => {
    const doc = example('adapterjob-train-lora.yaml', 'with-progress', { 'standin.lowrank.dev/sleep-seconds': '6' });
    const auth = { authorization: `Bearer ${registryToken}`, 'content-type': 'application/json' };
    const created = await fetch(`${reg.base}/v1/jobs`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ kind: 'AdapterJob', spec: doc.spec }),
    });
    assert.equal(created.status, 201);
    const record = (await created.json()) as { id: string };
    (doc.metadata.annotations as Record<string, string>)['lora.lowrank.dev/registry-job'] = record.id;
    await apply(doc);
    const mid = await waitFor(
      'progress in status while running',
      async () => {
        const cr = await getCr('AdapterJob', 'with-progress');
        return cr?.status?.phase === 'Running' && (cr.status.progress?.step ?? 0) >= 2 ? cr : undefined;
      },
      30_000,
    );
    const p = mid.status?.progress;
    assert.equal(p?.totalSteps, 6);
    assert.equal(p?.loss, Number((2 / (p?.step ?? 1)).toFixed(4)));
    assert.equal(p?.percent, Math.floor((100 * (p?.step ?? 0)) / 6));
    assert.equal(mid.status?.progressText, `${p?.step}/6`);
    await waitPhase('AdapterJob', 'with-progress', 'Succeeded');
    const after = (await (await fetch(`${reg.base}/v1/jobs/${record.id}`, { headers: auth })).json()) as {
      status: string;
      progress: { step: number };
    };
    assert.deepEqual([after.status, after.progress.step], ['succeeded', 6]);
  });

  it('a worker exiting 65 (bad input) fails at once with its reason; no retry', async () => {
    await apply(
      example('compressionjob-rank-reduction-fixed.yaml', 'bad-input', {
        'standin.lowrank.dev/exit-code': '65',
        'standin.lowrank.dev/reason': 'SourceRankMismatch',
      }),
    );
    const cr = await waitPhase('CompressionJob', 'bad-input', 'Failed');
    const failed = cond(cr, 'Failed');
    assert.equal(failed?.status, 'True');
    assert.equal(failed?.reason, 'SourceRankMismatch');
    assert.match(failed?.message ?? '', /exit code 65/);
    assert.equal(cr.status?.attempts, 1);
    assert.equal((await podsOf('bad-input')).length, 1);
  });

  it('a retryable failure (75) is retried up to backoffLimit, then the job stays Failed', async () => {
    await apply(
      example(
        'adaptermerge-linear.yaml',
        'flaky',
        { 'standin.lowrank.dev/exit-code': '75', 'standin.lowrank.dev/reason': 'RegistryUnavailable' },
        { retry: { backoffLimit: 1 } },
      ),
    );
    const cr = await waitPhase('AdapterMerge', 'flaky', 'Failed', 90_000);
    assert.equal(cond(cr, 'Failed')?.reason, 'RegistryUnavailable');
    assert.equal(cr.status?.attempts, 2);
    // Between the attempts the resource said why it was waiting (an Event kubectl describe shows).
    const describe = await kubectl(['-n', ns, 'describe', 'am', 'flaky']);
    assert.match(describe.stdout, /attempt 1 failed \(exit code 75, RegistryUnavailable\); retrying within backoffLimit 1/);
    assert.equal((await podsOf('flaky')).length, 2);
    // Failed stays failed: a later resync does not start another attempt.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await getCr('AdapterMerge', 'flaky'))?.status?.phase, 'Failed');
    assert.equal((await podsOf('flaky')).length, 2);
  });

  it('activeDeadlineSeconds stops a run that takes too long: Failed/DeadlineExceeded, process gone', async () => {
    await apply(
      example(
        'compressionjob-rank-reduction-fixed.yaml',
        'too-slow',
        { 'standin.lowrank.dev/sleep-seconds': '120' },
        {
          retry: { backoffLimit: 3, activeDeadlineSeconds: 3 },
        },
      ),
    );
    const cr = await waitPhase('CompressionJob', 'too-slow', 'Failed', 60_000);
    assert.equal(cond(cr, 'Failed')?.reason, 'DeadlineExceeded');
    assert.equal(cr.status?.attempts, 1);
    await waitFor('the pod to be gone', async () => (await podsOf('too-slow')).length === 0, 30_000);
  });

  it('a resource deleted mid-run leaves no pod, Job or process behind', async () => {
    await apply(example('adapterjob-train-lora.yaml', 'doomed', { 'standin.lowrank.dev/sleep-seconds': '120' }));
    await waitPhase('AdapterJob', 'doomed', 'Running');
    const [pod] = await podsOf('doomed');
    assert.ok(pod);
    const del = await kubectl(['-n', ns, 'delete', 'aj', 'doomed', '--timeout=60s']);
    assert.equal(del.code, 0, del.stderr);
    // kubectl delete returns when the finalizer is gone, which the operator drops only after the Job.
    assert.equal(await getCr('AdapterJob', 'doomed'), undefined);
    assert.deepEqual(await podsOf('doomed'), []);
    assert.deepEqual(await jobsOf('doomed'), []);
    assert.match(agent?.log() ?? '', new RegExp(`pod deleted: stopping its processes","pod":"${ns}/${pod.metadata?.name}`));
  });

  it('suspend holds the job without a pod; clearing it runs the job', async () => {
    await apply(example('adapterjob-train-lora.yaml', 'held', {}, { suspend: true }));
    const cr = await waitPhase('AdapterJob', 'held', 'Suspended');
    assert.equal(cond(cr, 'Suspended')?.status, 'True');
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await podsOf('held'), []);
    const patch = await kubectl(['-n', ns, 'patch', 'aj', 'held', '--type=merge', '-p', '{"spec":{"suspend":false}}']);
    assert.equal(patch.code, 0, patch.stderr);
    const done = await waitPhase('AdapterJob', 'held', 'Succeeded');
    assert.equal(cond(done, 'Suspended')?.status, 'False');
  });

  it('an AdapterMerge waits for the AdapterJob producing its input, then runs', async () => {
    await apply(
      example(
        'adapterjob-train-lora.yaml',
        'producer',
        { 'standin.lowrank.dev/sleep-seconds': '4' },
        { output: { repository: 'nlp-team/fresh' } },
      ),
    );
    await waitPhase('AdapterJob', 'producer', 'Running');
    await apply(
      example(
        'adaptermerge-linear.yaml',
        'consumer',
        {},
        {
          inputs: [
            { repository: 'nlp-team/fresh', rank: 16 },
            { repository: 'nlp-team/support-bot', version: 1, rank: 16 },
          ],
        },
      ),
    );
    const waiting = await waitPhase('AdapterMerge', 'consumer', 'Pending');
    assert.equal(cond(waiting, 'InputsResolved')?.status, 'False');
    assert.match(cond(waiting, 'InputsResolved')?.message ?? '', /AdapterJob\/producer/);
    assert.deepEqual(await jobsOf('consumer'), []);
    const produced = await waitPhase('AdapterJob', 'producer', 'Succeeded');
    const merged = await waitPhase('AdapterMerge', 'consumer', 'Succeeded', 60_000);
    assert.equal(cond(merged, 'InputsResolved')?.status, 'True');
    const [job] = await jobsOf('consumer');
    const producedAt = Date.parse(cond(produced, 'Succeeded')?.lastTransitionTime ?? '');
    assert.ok(new Date(job?.metadata?.creationTimestamp ?? 0).getTime() >= producedAt - 1000, 'merge Job created before its input existed');
  });

  it('the operator killed mid-reconcile and restarted converges: every resource once, no duplicates', async () => {
    const names = Array.from({ length: 6 }, (_, i) => `burst-${i}`);
    const docs = names.map((n) => example('adapterjob-train-lora.yaml', n, { 'standin.lowrank.dev/sleep-seconds': '2' }));
    const applied = kubectl(['apply', '-f', '-'], docs.map((d) => stringify(d)).join('---\n'));
    // Kill as soon as the first Job exists: some resources are reconciled, some half, some not.
    await waitFor(
      'a first Job',
      async () =>
        (
          await batch.listNamespacedJob({
            namespace: ns,
            labelSelector: 'lora.lowrank.dev/name in (burst-0,burst-1,burst-2,burst-3,burst-4,burst-5)',
          })
        ).items.length > 0,
      30_000,
      20,
    );
    await operator?.stop('SIGKILL');
    assert.equal((await applied).code, 0);
    operator?.restart(); // a new process: it waits for the dead one's Lease to expire
    for (const n of names) await waitPhase('AdapterJob', n, 'Succeeded', 90_000);
    for (const n of names) {
      assert.equal((await jobsOf(n)).length, 1, `${n}: one Job`);
      assert.equal((await podsOf(n)).length, 1, `${n}: one pod`);
    }
    assert.match(operator?.log() ?? '', /became leader[\s\S]*became leader/);
  });

  it('every shipped example runs to Succeeded with its version', async () => {
    // The examples ask for A100, H200 and L40S nodes and a PriorityClass too; give the cluster them.
    for (const gpu of ['nvidia-a100-80gb', 'nvidia-h200', 'nvidia-l40s']) {
      moreAgents.push(startAgent(id, { 'lowrank.dev/e2e-run': id, 'nvidia.com/gpu.product': gpu }, `e2e-node-${id}-${gpu}`));
    }
    await kubectl(['create', 'priorityclass', 'training-high', '--value=1000']);
    const files = readdirSync(join(ROOT, 'crds/examples')).filter((f) => f.endsWith('.yaml'));
    const kinds: Record<string, Kind> = { adapterjob: 'AdapterJob', adaptermerge: 'AdapterMerge', compressionjob: 'CompressionJob' };
    const all = files.map((f) => ({ kind: kinds[f.split('-')[0] as string] as Kind, name: `ex-${f.replace(/\.yaml$/, '')}`, file: f }));
    const applied = await kubectl(['apply', '-f', '-'], all.map((e) => stringify(example(e.file, e.name))).join('---\n'));
    assert.equal(applied.code, 0, applied.stderr);
    for (const e of all) {
      const cr = await waitPhase(e.kind, e.name, 'Succeeded', 120_000);
      assert.equal(cr.status?.outputVersion?.version, 1, e.name);
    }
    const table = await kubectl(['-n', ns, 'get', 'adapterjobs,adaptermerges,compressionjobs.lora.lowrank.dev', '-o', 'name']);
    assert.equal(table.stdout.split('\n').filter((l) => l.includes('/ex-')).length, files.length);
  });

  it('a second replica waits as standby, takes over when the leader shuts down gracefully, and serves health and metrics', async () => {
    standby = startOperator(`${id}-standby`, ns);
    // The last start's port (a restarted process logs a new one).
    const httpOf = (p: Proc) =>
      waitFor('the operator http port', async () => [...p.log().matchAll(/"http":"127\.0\.0\.1:(\d+)"/g)].at(-1)?.[1]);
    const get = async (port: string, path: string) => {
      const r = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: r.status, text: await r.text() };
    };
    const standbyPort = await httpOf(standby);
    assert.equal((await get(standbyPort, '/healthz')).status, 200);
    assert.equal((await get(standbyPort, '/readyz')).status, 200);
    assert.match((await get(standbyPort, '/metrics')).text, /^lowrank_operator_leader 0$/m);
    const leaderPort = await httpOf(operator as Proc);
    const metrics = (await get(leaderPort, '/metrics')).text;
    assert.match(metrics, /^lowrank_operator_leader 1$/m);
    assert.match(metrics, /^lowrank_operator_jobs_created_total\{kind="AdapterJob"\} [1-9]/m);
    assert.match(metrics, /^lowrank_operator_reconcile_duration_seconds_count\{kind="AdapterMerge"\} [1-9]/m);
    // SIGTERM: in-flight work finishes, the Lease is released, exit 0; the standby leads at once.
    assert.equal(await operator?.stop('SIGTERM'), 0);
    assert.match(operator?.log() ?? '', /"msg":"lease released"/);
    await waitFor('the standby to lead', async () => /became leader/.test(standby?.log() ?? ''), 10_000);
    await apply(example('adapterjob-train-lora.yaml', 'after-failover'));
    await waitPhase('AdapterJob', 'after-failover', 'Succeeded');
    // Keep a running operator for the cleanup in after().
    const promoted = standby;
    standby = operator;
    operator = promoted;
  });
});
