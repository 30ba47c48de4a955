/**
 * Trans-LoRA through kubectl with the real worker: an AdapterJob (mode train,
 * training.transferable) makes the source version with stage 0's seeds and discriminator,
 * then an AdapterJob mode transfer moves it to a different base; the operator gives both
 * pods LOWRANK_SEED_KEY from the lowrank-seed-key Secret, the test node agent runs
 * `lora-worker run`, and the CRs end Succeeded with the versions the registry holds
 * (transferred_from lineage, the student beating the untrained target). Without the
 * Secret, a transfer ends Failed naming LOWRANK_SEED_KEY, without retries.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { createToken } from '../../registry-api/src/auth/tokens.ts';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { writeDigitData, writeTransferBases } from '../../worker/test/support/transfer-bases.ts';
import { apis, kubeConfig, kubectl, type Proc, runId, startAgent, startOperator, waitFor } from '../src/cluster.ts';

const id = runId();
const ns = `e2e-transfer-${id}`;
const { custom } = apis(kubeConfig());
const tmp = mkdtempSync(join(tmpdir(), 'e2e-transfer-'));
const paths = {
  source: join(tmp, 'source-base'),
  target: join(tmp, 'target-base'),
  train: join(tmp, 'train.jsonl'),
  eval: join(tmp, 'eval.jsonl'),
};
let agent: Proc | undefined;
let operator: Proc | undefined;
let reg: TestRegistry;
let client: RegistryClient;

after(async () => {
  await kubectl(['-n', ns, 'delete', 'adapterjobs', '--all', '--timeout=60s']);
  await operator?.stop();
  await agent?.stop();
  await kubectl(['delete', 'namespace', ns, '--wait=false']);
  await kubectl(['delete', 'node', '-l', `lowrank.dev/e2e-run=${id}`, '--wait=false']);
  rmSync(tmp, { recursive: true, force: true });
});

before(async () => {
  const r = await kubectl(['wait', '--for=condition=Established', 'crd/adapterjobs.lora.lowrank.dev', '--timeout=5s']);
  if (r.code !== 0) {
    const applied = await kubectl([
      'apply',
      '--server-side',
      '--force-conflicts',
      '-f',
      join(import.meta.dirname, '..', '..', 'crds', 'bases'),
    ]);
    assert.equal(applied.code, 0, applied.stderr);
    await kubectl(['wait', '--for=condition=Established', 'crd/adapterjobs.lora.lowrank.dev', '--timeout=30s']);
  }
  assert.equal((await kubectl(['create', 'namespace', ns])).code, 0);
  await writeTransferBases(paths.source, paths.target);
  writeDigitData(paths.train, paths.eval);
  reg = await startRegistry();
  const org = await reg.prisma.organization.create({ data: { name: `e2e-${id}` } });
  const team = await reg.prisma.team.create({ data: { name: 'nlp-team', organizationId: org.id } });
  const user = await reg.prisma.user.create({ data: { handle: `transfer-${id}`, memberships: { create: { teamId: team.id } } } });
  const token = (await createToken(reg.prisma, { userId: user.id, name: 'e2e', scope: 'write' })).token;
  client = new RegistryClient({ registry: reg.base, token });
  for (const [name, literal] of [
    ['lowrank-registry-token', `token=${token}`],
    ['lowrank-seed-key', `key=${randomBytes(32).toString('hex')}`],
  ]) {
    const secret = await kubectl(['-n', ns, 'create', 'secret', 'generic', name as string, `--from-literal=${literal}`]);
    assert.equal(secret.code, 0, secret.stderr);
  }
  agent = startAgent(id, { 'lowrank.dev/e2e-run': id });
  operator = startOperator(id, ns, {
    LOWRANK_REGISTRY_URL: reg.base,
    LOWRANK_OPERATOR_TOKEN: token,
    LOWRANK_WORKER_COMMAND: JSON.stringify(['node', 'worker/src/cli.ts', 'run']),
  });
});

interface Cr {
  status?: { phase?: string; outputVersion?: { repository: string; version: number }; conditions?: { type: string; message: string }[] };
}

async function applyAndWait(name: string, spec: Record<string, unknown>): Promise<Cr> {
  const doc = {
    apiVersion: 'lora.lowrank.dev/v1alpha1',
    kind: 'AdapterJob',
    metadata: { name, namespace: ns },
    spec: { ...spec, nodeSelector: { 'lowrank.dev/e2e-run': id }, resources: { gpu: { count: 0 } }, retry: { backoffLimit: 1 } },
  };
  const r = await kubectl(['apply', '-f', '-'], stringify(doc));
  assert.equal(r.code, 0, r.stderr);
  return waitFor(
    `adapterjobs/${name} to end`,
    async () => {
      const cr = (await custom.getNamespacedCustomObject({
        group: 'lora.lowrank.dev',
        version: 'v1alpha1',
        namespace: ns,
        plural: 'adapterjobs',
        name,
      })) as Cr;
      return cr.status?.phase === 'Succeeded' || cr.status?.phase === 'Failed' ? cr : undefined;
    },
    180_000,
    500,
  );
}

const transfer = {
  mode: 'transfer',
  baseModel: { name: 'tiny/target', path: paths.target, dtype: 'f32' },
  transfer: {
    sourceAdapter: { repository: 'nlp-team/next-source', version: 1 },
    candidates: 3000,
    keep: 400,
    sampling: { temperature: 0.7, topP: 0.85, maxNewTokens: 16 },
    evalDataset: { path: paths.eval, format: 'prompt-completion' },
  },
  method: { type: 'lora', rank: 8, alpha: 16, targetModules: ['all-linear'] },
  optimizer: { lr: 0.01 },
  schedule: { type: 'cosine', warmupSteps: 5 },
  training: { maxSteps: 150, microBatchSize: 16, logEvery: 50 },
  output: { repository: 'nlp-team/next-target', tags: ['transferred'] },
  seed: 11,
};

describe('kubectl apply: Trans-LoRA stage 0 and a transfer, with the real lora-worker', () => {
  it('a transferable train job, then mode transfer: both Succeeded, the transfer linked to its source', async () => {
    const source = await applyAndWait('next-source', {
      mode: 'train',
      baseModel: { name: 'tiny/source', path: paths.source, dtype: 'f32' },
      dataset: { path: paths.train, format: 'prompt-completion', evalFraction: 0.05, maxSeqLength: 64 },
      method: { type: 'lora', rank: 8, alpha: 16, targetModules: ['all-linear'] },
      optimizer: { lr: 0.01 },
      schedule: { type: 'cosine', warmupSteps: 5 },
      training: { maxSteps: 300, microBatchSize: 16, logEvery: 50, transferable: true, seedSamples: 5 },
      output: { repository: 'nlp-team/next-source' },
      seed: 7,
    });
    assert.equal(source.status?.phase, 'Succeeded', JSON.stringify(source.status));
    const cr = await applyAndWait('next-transfer', transfer);
    assert.equal(cr.status?.phase, 'Succeeded', JSON.stringify(cr.status));
    assert.deepEqual(cr.status?.outputVersion && [cr.status.outputVersion.repository, cr.status.outputVersion.version], [
      'nlp-team/next-target',
      1,
    ]);
    const v = await client.json<any>('GET', '/v1/repos/nlp-team/next-target/versions/transferred');
    assert.equal(v.lineage[0].relation, 'transferred_from');
    assert.equal(v.lineage[0].parent, 'nlp-team/next-source@1');
    const md = v.methodMetadata;
    assert.equal(md.kind, 'transfer');
    assert.ok(md.studentScore > md.baselineScore, `student ${md.studentScore} vs untrained target ${md.baselineScore}`);
  });

  it('without the seed-key Secret a transfer ends Failed naming LOWRANK_SEED_KEY', async () => {
    assert.equal((await kubectl(['-n', ns, 'delete', 'secret', 'lowrank-seed-key'])).code, 0);
    const cr = await applyAndWait('no-key', { ...transfer, output: { repository: 'nlp-team/never' } });
    assert.equal(cr.status?.phase, 'Failed');
    assert.match(cr.status?.conditions?.find((c) => c.type === 'Failed')?.message ?? '', /LOWRANK_SEED_KEY is not set/);
    assert.equal(await reg.prisma.repository.count({ where: { name: 'never' } }), 0);
  });
});
