/**
 * The Helm chart (charts/lowrank) with helm built from the Go module proxy: lint, template
 * validated by the real apiserver (server-side dry run against the Kubernetes schemas),
 * values.schema.json refusals, `helm install` on the test cluster, and the operator run
 * with the chart's ServiceAccount token: its least-privilege Role is enough to take an
 * example to Succeeded and refuses everything else.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import { ensureHelm } from '../../scripts/lib/services/kubebins.ts';
import {
  kubeConfig,
  kubectl,
  kubeEnv,
  type Proc,
  ROOT,
  type RunResult,
  runId,
  startAgent,
  startOperator,
  stateDir,
  waitFor,
} from '../src/cluster.ts';

const id = runId();
const releaseNs = `e2e-chart-${id}`;
const jobsNs = `e2e-chart-jobs-${id}`;
const chart = join(ROOT, 'charts/lowrank');
const release = 'lowrank';
const required = [
  '--set',
  'postgresql.url=postgresql://u:p@db:5432/lowrank',
  '--set',
  'redis.url=redis://redis:6379',
  '--set',
  's3.accessKeyId=AK',
  '--set',
  's3.secretAccessKey=SK',
];
let helmBin = '';
let operator: Proc | undefined;
let agent: Proc | undefined;

function helm(args: string[]): Promise<RunResult> {
  return new Promise((res) => {
    execFile(helmBin, [...args, `--kubeconfig=${kubeEnv().kubeconfig}`], { maxBuffer: 32 << 20 }, (err, stdout, stderr) =>
      res({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

after(async () => {
  await kubectl(['-n', jobsNs, 'delete', 'adapterjobs', '--all', '--timeout=60s']);
  await operator?.stop();
  await agent?.stop();
  if (helmBin) await helm(['uninstall', release, '-n', releaseNs]);
  await kubectl(['delete', 'namespace', releaseNs, jobsNs, '--wait=false']);
  await kubectl(['delete', 'node', `e2e-node-${id}`, '--wait=false']);
});

before(() => {
  helmBin = ensureHelm(); // cached in ~/.cache/lowrank/bin after the first build
});

describe('Helm chart charts/lowrank', () => {
  it('ships the same CRDs as crds/bases', () => {
    const bases = readdirSync(join(ROOT, 'crds/bases')).sort();
    assert.deepEqual(readdirSync(join(chart, 'crds')).sort(), bases);
    for (const f of bases) assert.equal(readFileSync(join(chart, 'crds', f), 'utf8'), readFileSync(join(ROOT, 'crds/bases', f), 'utf8'), f);
  });

  it('passes helm lint --strict', async () => {
    const r = await helm(['lint', '--strict', chart, ...required]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  it('values.schema.json refuses root pods and a writable root filesystem; missing secrets are named', async () => {
    const root = await helm(['template', release, chart, ...required, '--set', 'podSecurityContext.runAsNonRoot=false']);
    assert.notEqual(root.code, 0);
    assert.match(root.stderr, /at '\/podSecurityContext\/runAsNonRoot': value must be true/);
    const rw = await helm(['template', release, chart, ...required, '--set', 'containerSecurityContext.readOnlyRootFilesystem=false']);
    assert.notEqual(rw.code, 0);
    assert.match(rw.stderr, /at '\/containerSecurityContext\/readOnlyRootFilesystem': value must be true/);
    const typo = await helm(['template', release, chart, ...required, '--set', 'operater.replicas=1']);
    assert.notEqual(typo.code, 0);
    assert.match(typo.stderr, /operater/);
    const missing = await helm(['template', release, chart]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /set postgresql\.url .* or postgresql\.existingSecret/);
  });

  it('renders manifests the apiserver accepts (server-side dry run), non-root and read-only everywhere', async () => {
    assert.equal((await kubectl(['create', 'namespace', releaseNs])).code, 0);
    const r = await helm([
      'template',
      release,
      chart,
      '-n',
      releaseNs,
      ...required,
      '--set',
      'web.enabled=true',
      '--set',
      'ingress.enabled=true',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const docs = r.stdout
      .split(/^---$/m)
      .map((d) => parse(d))
      .filter(Boolean) as { kind: string; spec?: { template?: { spec?: Record<string, unknown> } } }[];
    const kinds = docs.map((d) => d.kind).sort();
    for (const k of [
      'ClusterRole',
      'ClusterRoleBinding',
      'Deployment',
      'Ingress',
      'Role',
      'RoleBinding',
      'Secret',
      'Service',
      'ServiceAccount',
    ]) {
      assert.ok(kinds.includes(k), `${k} rendered`);
    }
    for (const d of docs.filter((x) => x.kind === 'Deployment')) {
      const spec = d.spec?.template?.spec as {
        securityContext: { runAsNonRoot: boolean };
        containers: { securityContext: { readOnlyRootFilesystem: boolean } }[];
      };
      assert.equal(spec.securityContext.runAsNonRoot, true);
      for (const c of spec.containers) assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    }
    const dry = await kubectl(['apply', '--dry-run=server', '-n', releaseNs, '-f', '-'], r.stdout);
    assert.equal(dry.code, 0, dry.stderr);
  });

  it('helm install on the test cluster; the operator with the chart ServiceAccount runs a job and can do no more', async () => {
    assert.equal((await kubectl(['create', 'namespace', jobsNs])).code, 0);
    const inst = await helm([
      'install',
      release,
      chart,
      '-n',
      releaseNs,
      ...required,
      '--set',
      `operator.watchNamespace=${jobsNs}`,
      '--set',
      'operator.replicas=1',
    ]);
    assert.equal(inst.code, 0, inst.stderr);
    const sa = `system:serviceaccount:${releaseNs}:lowrank-operator`;
    const can = async (args: string[]) => (await kubectl(['auth', 'can-i', `--as=${sa}`, ...args])).stdout.trim();
    assert.equal(await can(['patch', 'adapterjobs.lora.lowrank.dev/status', '-n', jobsNs]), 'yes');
    assert.equal(await can(['create', 'jobs.batch', '-n', jobsNs]), 'yes');
    assert.equal(await can(['get', 'secrets/lowrank-registry-token', '-n', jobsNs]), 'yes');
    assert.equal(await can(['get', 'secrets/other', '-n', jobsNs]), 'no');
    assert.equal(await can(['create', 'pods', '-n', jobsNs]), 'no');
    assert.equal(await can(['delete', 'adapterjobs.lora.lowrank.dev', '-n', jobsNs]), 'no');
    assert.equal(await can(['create', 'jobs.batch', '-n', 'default']), 'no');
    assert.equal(await can(['update', 'leases.coordination.k8s.io/lowrank-operator', '-n', releaseNs]), 'yes');

    // Run the operator out of cluster with exactly the chart's identity.
    const token = await kubectl(['-n', releaseNs, 'create', 'token', 'lowrank-operator', '--duration=1h']);
    assert.equal(token.code, 0, token.stderr);
    const admin = parse(readFileSync(kubeEnv().kubeconfig, 'utf8'));
    admin.users = [{ name: 'operator', user: { token: token.stdout.trim() } }];
    admin.contexts = [{ name: 'lowrank-test', context: { cluster: 'lowrank-test', user: 'operator' } }];
    const kubeconfigPath = join(stateDir(`chart-${id}`), 'operator.kubeconfig');
    writeFileSync(kubeconfigPath, stringify(admin), { mode: 0o600 });
    assert.equal(
      (await kubectl(['-n', jobsNs, 'create', 'secret', 'generic', 'lowrank-registry-token', '--from-literal=token=t'])).code,
      0,
    );
    agent = startAgent(id, { 'lowrank.dev/e2e-run': id, 'nvidia.com/gpu.product': 'nvidia-h100-80gb' });
    operator = startOperator(`chart-${id}`, jobsNs, {
      KUBECONFIG: kubeconfigPath,
      LOWRANK_LEASE_NAME: 'lowrank-operator',
      LOWRANK_LEASE_NAMESPACE: releaseNs,
    });
    const doc = parse(readFileSync(join(ROOT, 'crds/examples/adapterjob-train-lora.yaml'), 'utf8'));
    doc.metadata = { name: 'via-chart', namespace: jobsNs };
    doc.spec.nodeSelector = { 'lowrank.dev/e2e-run': id };
    const applied = await kubectl(['apply', '-f', '-'], stringify(doc));
    assert.equal(applied.code, 0, applied.stderr);
    const custom = kubeConfig().makeApiClient(CustomObjectsApi);
    const cr = await waitFor(
      'via-chart Succeeded',
      async () => {
        const o = (await custom.getNamespacedCustomObject({
          group: 'lora.lowrank.dev',
          version: 'v1alpha1',
          namespace: jobsNs,
          plural: 'adapterjobs',
          name: 'via-chart',
        })) as { status?: { phase?: string; outputVersion?: { version: number } } };
        return o.status?.phase === 'Succeeded' ? o : undefined;
      },
      60_000,
    );
    assert.equal(cr.status?.outputVersion?.version, 1);
    assert.doesNotMatch(operator.log(), /forbidden/i);
  });
});
