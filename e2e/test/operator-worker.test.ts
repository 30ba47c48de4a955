/**
 * The whole path with the real worker: kubectl apply an AdapterMerge and a CompressionJob
 * whose inputs are versions in a real registry (PostgreSQL, Redis, MinIO); the operator
 * makes the Jobs, the real controller-manager and scheduler make and bind the pods, the
 * test node agent (the only fake) runs `lora-worker run`, which pulls the inputs, merges
 * or compresses them with the native core and pushes the result; the CR ends Succeeded
 * with the version the registry now holds, lineage included, and the registry job record
 * the operator made for it (the worker reported to it) linked from the version. A worker
 * refused by bad input ends Failed with its reason, without retries. The ICM-LoRA modes go
 * the same way: an AdapterJob train-generator over two registry versions, then an
 * AdapterJob generate from that generator, to a version with generated_by lineage.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { createToken } from '../../registry-api/src/auth/tokens.ts';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { push } from '../../registry-api/src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import type { LoraModule } from '../../worker/src/native/linalg.ts';
import { writePeftAdapter } from '../../worker/src/peft/adapter-dir.ts';
import { lcg, randomModule } from '../../worker/test/support/random-adapter.ts';
import { apis, kubeConfig, kubectl, type Proc, runId, startAgent, startOperator, waitFor } from '../src/cluster.ts';

const id = runId();
const ns = `e2e-worker-${id}`;
const { custom } = apis(kubeConfig());
const WORKER = ['node', 'worker/src/cli.ts', 'run'];
let agent: Proc | undefined;
let operator: Proc | undefined;
let reg: TestRegistry;
let client: RegistryClient;

after(async () => {
  await kubectl(['-n', ns, 'delete', 'adaptermerges,compressionjobs,adapterjobs', '--all', '--timeout=60s']);
  await operator?.stop();
  await agent?.stop();
  await kubectl(['delete', 'namespace', ns, '--wait=false']);
  await kubectl(['delete', 'node', '-l', `lowrank.dev/e2e-run=${id}`, '--wait=false']);
});

function adapter(seed: number): Record<string, LoraModule> {
  const rnd = lcg(seed);
  return {
    'model.layers.0.self_attn.q_proj': randomModule(rnd, 32, 32, 8),
    'model.layers.0.self_attn.v_proj': randomModule(rnd, 16, 32, 8),
  };
}

before(async () => {
  for (const crd of ['adaptermerges', 'compressionjobs', 'adapterjobs']) {
    const r = await kubectl(['wait', '--for=condition=Established', `crd/${crd}.lora.lowrank.dev`, '--timeout=5s']);
    if (r.code !== 0) {
      const applied = await kubectl([
        'apply',
        '--server-side',
        '--force-conflicts',
        '-f',
        join(import.meta.dirname, '..', '..', 'crds', 'bases'),
      ]);
      assert.equal(applied.code, 0, applied.stderr);
      await kubectl(['wait', '--for=condition=Established', `crd/${crd}.lora.lowrank.dev`, '--timeout=30s']);
    }
  }
  assert.equal((await kubectl(['create', 'namespace', ns])).code, 0);
  reg = await startRegistry();
  const org = await reg.prisma.organization.create({ data: { name: `e2e-${id}` } });
  const team = await reg.prisma.team.create({ data: { name: 'nlp-team', organizationId: org.id } });
  const user = await reg.prisma.user.create({ data: { handle: `worker-${id}`, memberships: { create: { teamId: team.id } } } });
  const token = (await createToken(reg.prisma, { userId: user.id, name: 'e2e', scope: 'write' })).token;
  client = new RegistryClient({ registry: reg.base, token });
  await client.json('POST', '/v1/repos', { namespace: 'nlp-team', name: 'support-bot', baseModel: 'tiny/llama' });
  const dir = mkdtempSync(join(tmpdir(), 'e2e-worker-'));
  for (const seed of [1, 2]) {
    writePeftAdapter(join(dir, String(seed)), adapter(seed), { base_model_name_or_path: 'tiny/llama' });
    await push(client, join(dir, String(seed)), 'nlp-team/support-bot');
  }
  const secret = await kubectl(['-n', ns, 'create', 'secret', 'generic', 'lowrank-registry-token', `--from-literal=token=${token}`]);
  assert.equal(secret.code, 0, secret.stderr);
  agent = startAgent(id, { 'lowrank.dev/e2e-run': id });
  operator = startOperator(id, ns, {
    LOWRANK_REGISTRY_URL: reg.base,
    LOWRANK_OPERATOR_TOKEN: token,
    LOWRANK_WORKER_COMMAND: JSON.stringify(WORKER),
  });
});

interface Cr {
  metadata?: { annotations?: Record<string, string> };
  status?: {
    phase?: string;
    outputVersion?: { repository: string; version: number };
    conditions?: { type: string; reason: string; message: string }[];
  };
}

async function applyAndWait(doc: Record<string, unknown>, plural: string, phases: string[]): Promise<Cr> {
  const r = await kubectl(['apply', '-f', '-'], stringify(doc));
  assert.equal(r.code, 0, r.stderr);
  const name = (doc.metadata as { name: string }).name;
  return waitFor(
    `${plural}/${name} to end`,
    async () => {
      const cr = (await custom.getNamespacedCustomObject({
        group: 'lora.lowrank.dev',
        version: 'v1alpha1',
        namespace: ns,
        plural,
        name,
      })) as Cr;
      return cr.status?.phase && phases.includes(cr.status.phase) ? cr : undefined;
    },
    180_000,
    500,
  );
}

const merge = (name: string, inputs: unknown[], output: string) => ({
  apiVersion: 'lora.lowrank.dev/v1alpha1',
  kind: 'AdapterMerge',
  metadata: { name, namespace: ns },
  spec: {
    inputs,
    weights: inputs.map(() => 0.5),
    method: 'ties',
    density: 0.5,
    nodeSelector: { 'lowrank.dev/e2e-run': id },
    resources: { gpu: { count: 0 } },
    retry: { backoffLimit: 2 },
    output: { repository: output, tags: ['e2e'] },
  },
});

describe('kubectl apply to a registry version, with the real lora-worker', () => {
  it('merges two registry versions and the CR reports the version the registry holds', async () => {
    const cr = await applyAndWait(
      merge(
        'real-ties',
        [
          { repository: 'nlp-team/support-bot', version: 1 },
          { repository: 'nlp-team/support-bot', version: 2 },
        ],
        'nlp-team/support-suite',
      ),
      'adaptermerges',
      ['Succeeded', 'Failed'],
    );
    assert.equal(cr.status?.phase, 'Succeeded', JSON.stringify(cr.status));
    assert.deepEqual(cr.status?.outputVersion && { r: cr.status.outputVersion.repository, v: cr.status.outputVersion.version }, {
      r: 'nlp-team/support-suite',
      v: 1,
    });
    const v = await client.json<any>('GET', '/v1/repos/nlp-team/support-suite/versions/e2e');
    assert.equal(v.number, 1);
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent, l.weight]),
      [
        ['merged_from', 'nlp-team/support-bot@1', 0.5],
        ['merged_from', 'nlp-team/support-bot@2', 0.5],
      ],
    );
    assert.equal(v.methodMetadata.method, 'ties');
    // The operator recorded the job in the registry; the worker reported to it and linked the version.
    const recordId = cr.metadata?.annotations?.['lora.lowrank.dev/registry-job'];
    assert.ok(recordId, 'the operator annotated the resource with its registry job');
    assert.equal(v.job, recordId);
    const record = await client.json<any>('GET', `/v1/jobs/${recordId}`);
    assert.equal(record.status, 'succeeded');
    assert.equal(record.progress.output.ref, 'nlp-team/support-suite@1');
  });

  it('compresses the merged version to a serving slot (CompressionJob)', async () => {
    const cr = await applyAndWait(
      {
        apiVersion: 'lora.lowrank.dev/v1alpha1',
        kind: 'CompressionJob',
        metadata: { name: 'real-serve8', namespace: ns },
        spec: {
          source: { adapter: { repository: 'nlp-team/support-suite', tag: 'e2e' } },
          servingMaxRank: 8,
          nodeSelector: { 'lowrank.dev/e2e-run': id },
          output: { repository: 'nlp-team/support-suite', tags: ['serve-8'] },
        },
      },
      'compressionjobs',
      ['Succeeded', 'Failed'],
    );
    assert.equal(cr.status?.phase, 'Succeeded', JSON.stringify(cr.status));
    const v = await client.json<any>('GET', '/v1/repos/nlp-team/support-suite/versions/serve-8');
    assert.equal(v.rank, 8);
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent]),
      [['compressed_from', 'nlp-team/support-suite@1']],
    );
  });

  it('trains an ICM-LoRA generator and generates an adapter from it (AdapterJob train-generator, generate)', async () => {
    const job = (name: string, spec: Record<string, unknown>) => ({
      apiVersion: 'lora.lowrank.dev/v1alpha1',
      kind: 'AdapterJob',
      metadata: { name, namespace: ns },
      spec: { ...spec, nodeSelector: { 'lowrank.dev/e2e-run': id }, resources: { gpu: { count: 0 } }, seed: 3 },
    });
    const trained = await applyAndWait(
      job('real-generator', {
        mode: 'train-generator',
        generatorTraining: {
          family: [1, 2].map((v) => ({
            adapter: { repository: 'nlp-team/support-bot', version: v },
            taskDescription: `Support task ${v}.`,
          })),
          embedder: 'lowrank/hashed-ngrams-v1',
          hiddenSize: 16,
          latentSize: 4,
          steps: 50,
        },
        output: { repository: 'nlp-team/support-generator', tags: ['e2e'] },
      }),
      'adapterjobs',
      ['Succeeded', 'Failed'],
    );
    assert.equal(trained.status?.phase, 'Succeeded', JSON.stringify(trained.status));
    const g = await client.json<any>('GET', '/v1/repos/nlp-team/support-generator/versions/e2e');
    assert.equal(g.methodMetadata.kind, 'generator');
    const generated = await applyAndWait(
      job('real-generated', {
        mode: 'generate',
        generate: { generator: { repository: 'nlp-team/support-generator', tag: 'e2e' }, taskDescription: 'Support task 3.' },
        output: { repository: 'nlp-team/support-generated' },
      }),
      'adapterjobs',
      ['Succeeded', 'Failed'],
    );
    assert.equal(generated.status?.phase, 'Succeeded', JSON.stringify(generated.status));
    const v = await client.json<any>('GET', '/v1/repos/nlp-team/support-generated/versions/1');
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent]),
      [['generated_by', `nlp-team/support-generator@${g.number}`]],
    );
    assert.equal(v.methodMetadata.taskDescription, 'Support task 3.');
  });

  it('a worker refused by bad input ends Failed with its reason, and nothing is pushed', async () => {
    const cr = await applyAndWait(
      merge('real-missing', [{ repository: 'nlp-team/support-bot', version: 99 }], 'nlp-team/never'),
      'adaptermerges',
      ['Succeeded', 'Failed'],
    );
    assert.equal(cr.status?.phase, 'Failed');
    const failed = cr.status?.conditions?.find((c) => c.type === 'Failed');
    assert.match(failed?.message ?? '', /has no version 99/);
    assert.equal(await reg.prisma.repository.count({ where: { name: 'never' } }), 0);
  });
});
