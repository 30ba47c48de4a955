/**
 * Operator scale: N AdapterJobs (suspended, so the reconcile path runs in full and no pod
 * starts) are created while the operator is stopped; then the operator starts and the
 * clock runs until every resource reports phase Suspended with its Job made. Prints CRs/s
 * and the apiserver requests per CR the reconcilers sent (the operator's own counter).
 *
 *   scripts/bench operator-scale [--count 1000] [--concurrency 4]
 * Needs the test cluster (scripts/services start etcd kube-apiserver kube-controller-manager kube-scheduler).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BatchV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { kubeConfig, kubectl, ROOT, runId, startOperator, waitFor } from '../e2e/src/cluster.ts';

const { values } = parseArgs({ options: { count: { type: 'string', default: '1000' }, concurrency: { type: 'string', default: '4' } } });
const count = Number(values.count);
const id = runId();
const ns = `bench-op-${id}`;
const kc = kubeConfig();
const custom = kc.makeApiClient(CustomObjectsApi);
const batch = kc.makeApiClient(BatchV1Api);
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const group = { group: 'lora.lowrank.dev', version: 'v1alpha1', namespace: ns, plural: 'adapterjobs' };

await kubectl(['apply', '--server-side', '--force-conflicts', '-f', join(ROOT, 'crds/bases')]);
await kubectl(['create', 'namespace', ns]);
await kubectl(['-n', ns, 'create', 'secret', 'generic', 'lowrank-registry-token', '--from-literal=token=t']);
const example = parse(readFileSync(join(ROOT, 'crds/examples/adapterjob-train-lora.yaml'), 'utf8'));

const t0 = Date.now();
const names = Array.from({ length: count }, (_, i) => `scale-${i}`);
for (let i = 0; i < names.length; i += 25) {
  await Promise.all(
    names.slice(i, i + 25).map((name) =>
      custom.createNamespacedCustomObject({
        ...group,
        body: { ...example, metadata: { name, namespace: ns }, spec: { ...example.spec, suspend: true } },
      }),
    ),
  );
}
console.error(`created ${count} AdapterJobs in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

const operator = startOperator(`bench-${id}`, ns, { LOWRANK_CONCURRENCY: values.concurrency, LOWRANK_RESYNC_SECONDS: '3600' });
const start = Date.now();
try {
  await waitFor(
    `${count} resources Suspended`,
    async () => {
      const list = (await custom.listNamespacedCustomObject(group)) as { items: { status?: { phase?: string } }[] };
      const done = list.items.filter((o) => o.status?.phase === 'Suspended').length;
      return done === count;
    },
    30 * 60_000,
    1000,
  );
  const seconds = (Date.now() - start) / 1000;
  const jobs = (await batch.listNamespacedJob({ namespace: ns })).items.length;
  const port = /"http":"127\.0\.0\.1:(\d+)"/.exec(operator.log())?.[1];
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const requests = [...metrics.matchAll(/^lowrank_operator_apiserver_requests_total\{verb="(\w+)"\} (\d+)/gm)].map(
    (m) => [m[1], Number(m[2])] as const,
  );
  const total = requests.reduce((a, [, n]) => a + n, 0);
  console.log(
    JSON.stringify({
      count,
      concurrency: Number(values.concurrency),
      seconds: Number(seconds.toFixed(1)),
      crsPerSecond: Number((count / seconds).toFixed(1)),
      jobs,
      requestsPerCr: Number((total / count).toFixed(2)),
      byVerb: Object.fromEntries(requests.map(([v, n]) => [v, Number((n / count).toFixed(2))])),
    }),
  );
} finally {
  await operator.stop();
  // The operator is gone: drop its finalizers so the namespace can go.
  for (let i = 0; i < names.length; i += 25) {
    await Promise.all(
      names
        .slice(i, i + 25)
        .map((name) =>
          custom
            .patchNamespacedCustomObject({ ...group, name, body: { metadata: { finalizers: null } } }, mergePatch)
            .catch(() => undefined),
        ),
    );
  }
  await kubectl(['delete', 'namespace', ns, '--wait=false']);
}
