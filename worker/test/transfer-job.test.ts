/**
 * Trans-LoRA end to end against a real registry (PostgreSQL, Redis, MinIO), on two small
 * Llama bases made here (support/transfer-bases.ts): a source (hidden 32, 2 layers, seed 3,
 * a 100-merge BPE tokenizer) and a genuinely different target (hidden 48, 3 layers, seed 11,
 * a 160-merge tokenizer), both pretrained briefly so adapters can learn.
 *   - stage 0: a transferable train job on the next-digit task keeps encrypted seeds (only
 *     their hashes in public metadata) and a discriminator in the version;
 *   - stage 1: a transfer job submitted over REST and run by the local executor generates
 *     prompts with the target base, filters them, has the teacher label them, distils a
 *     student on the target base and scores it on held-out real records: it beats the
 *     untrained target (printed), with transferred_from lineage and the metadata in the API;
 *   - bad transfer specs and a missing seed key fail with exit 65 and what to fix.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { pull } from '../../registry-api/src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { corpus, type TaskRecord } from '../src/data/synthetic.ts';
import { type Executor, startExecutor } from '../src/executor/executor.ts';
import { decryptSeeds } from '../src/transfer/seed-crypto.ts';
import { registryApi, seedNlpTeam } from './support/registry-users.ts';
import { writeDigitData, writeTransferBases } from './support/transfer-bases.ts';
import { runWorker } from './support/worker-cli.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-transfer-job-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let reg: TestRegistry;
let executor: Executor | undefined;
after(() => executor?.close());
const tok = { admin: '', ada: '' };
const SEED_KEY = randomBytes(32).toString('hex');
const sourceDir = join(tmp, 'source-base');
const targetDir = join(tmp, 'target-base');
const trainPath = join(tmp, 'train.jsonl');
const evalPath = join(tmp, 'eval.jsonl');
const redisUrl = `${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/9`;

const api = registryApi(() => reg.base, tok);

const worker = (spec: unknown, env: Record<string, string> = { LOWRANK_SEED_KEY: SEED_KEY }, workDir?: string) =>
  runWorker(spec, { registry: reg.base, token: tok.ada, tmp, env, ...(workDir ? { workDir } : {}) });

function sourceSpec(over: { [k: string]: any } = {}): any {
  return {
    kind: 'AdapterJob',
    metadata: { name: 'next-digit-source' },
    spec: {
      mode: 'train',
      baseModel: { name: 'tiny/source', path: sourceDir, dtype: 'f32' },
      dataset: { path: trainPath, format: 'prompt-completion', evalFraction: 0.05, maxSeqLength: 64 },
      method: { type: 'lora', rank: 8, alpha: 16, targetModules: ['all-linear'] },
      optimizer: { lr: 0.01 },
      schedule: { type: 'cosine', warmupSteps: 5 },
      training: { maxSteps: 300, microBatchSize: 16, logEvery: 50, transferable: true, seedSamples: 5 },
      output: { repository: 'nlp/next-source', tags: ['v1'] },
      seed: 7,
      ...over,
    },
  };
}

function transferSpec(transfer: { [k: string]: any } = {}, over: { [k: string]: any } = {}): any {
  return {
    kind: 'AdapterJob',
    metadata: { name: 'next-digit-transfer' },
    spec: {
      mode: 'transfer',
      baseModel: { name: 'tiny/target', path: targetDir, dtype: 'f32' },
      transfer: {
        sourceAdapter: { repository: 'nlp/next-source', version: 1 },
        seedSamples: 5,
        seedsPerPrompt: 3,
        generator: 'target',
        candidates: 3000,
        keep: 400,
        sampling: { temperature: 0.7, topP: 0.85, maxNewTokens: 16 },
        evalDataset: { path: evalPath, format: 'prompt-completion' },
        ...transfer,
      },
      method: { type: 'lora', rank: 8, alpha: 16, targetModules: ['all-linear'] },
      optimizer: { lr: 0.01 },
      schedule: { type: 'cosine', warmupSteps: 5 },
      training: { maxSteps: 150, microBatchSize: 16, logEvery: 50 },
      output: { repository: 'nlp/next-target', tags: ['transferred'] },
      seed: 11,
      ...over,
    },
  };
}

before(async () => {
  await writeTransferBases(sourceDir, targetDir);
  writeDigitData(trainPath, evalPath);
  reg = await startRegistry({ redis: new Redis(redisUrl) });
  await reg.redis.flushdb();
  Object.assign(tok, await seedNlpTeam(reg.prisma));
});

describe('Trans-LoRA: stage 0 (transferable train job) and stage 1 (mode transfer)', () => {
  it('stage 0 keeps encrypted seeds, their hashes and a discriminator with the source version', async () => {
    const res = await worker(sourceSpec());
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/next-source/versions/1');
    const t = v.methodMetadata.transfer;
    assert.equal(t.stage, 0);
    assert.equal(t.seeds.count, 5);
    assert.equal(t.seeds.hashes.length, 5);
    assert.equal(t.trainRecords, 380);
    assert.ok(t.discriminator.accuracy >= 0.8, `discriminator held-out accuracy ${t.discriminator.accuracy}`);
    assert.ok(t.discriminator.trainSize > 0 && t.discriminator.heldOut > 0);
    assert.equal(typeof t.discriminator.labels.real.id, 'number');
    assert.equal(t.sourceBase.spec, undefined, 'the local base spec stays out of public metadata');
    const stages = res.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).stage)
      .filter((s) => s?.startsWith('transfer stage 0'));
    assert.deepEqual(
      [...new Set(stages)],
      ['transfer stage 0: keeping seeds', 'transfer stage 0: generating negatives', 'transfer stage 0: training the discriminator'],
    );
    // The files: the seeds are ciphertext, readable only with the key.
    const out = join(tmp, 'pulled-source');
    await pull(new RegistryClient({ registry: reg.base, token: tok.ada }), 'nlp/next-source', '1', out);
    const enc = readFileSync(join(out, 'transfer', 'seeds.enc.json'), 'utf8');
    const train = readFileSync(trainPath, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as TaskRecord);
    assert.ok(!train.some((r) => enc.includes(r.prompt)), 'no seed prompt in clear');
    const seeds = decryptSeeds(JSON.parse(enc), Buffer.from(SEED_KEY, 'hex'), 'seeds');
    assert.equal(seeds.length, 5);
    for (const s of seeds) assert.ok(train.some((r) => r.prompt === s.prompt && r.completion === s.completion));
    assert.throws(() => decryptSeeds(JSON.parse(enc), randomBytes(32), 'seeds'), /encrypted under key/);
    readFileSync(join(out, 'transfer', 'discriminator', 'adapter_model.safetensors'));
  });

  it('stage 1 over REST: the transferred adapter beats the untrained target on held-out real records', async () => {
    process.env.LOWRANK_SEED_KEY = SEED_KEY; // the executor's workers inherit it
    executor = await startExecutor({
      redisUrl,
      registryUrl: reg.base,
      token: tok.admin,
      concurrency: 1,
      logsDir: join(tmp, 'logs'),
      workRoot: join(tmp, 'executor-work'),
    });
    await executor.ready();
    const { status, body } = await api('ada', 'POST', '/v1/jobs', transferSpec());
    assert.equal(status, 201, JSON.stringify(body));
    let job: any;
    for (const stop = Date.now() + 120_000; ; await new Promise((r) => setTimeout(r, 200))) {
      job = (await api('ada', 'GET', `/v1/jobs/${body.id}`)).body;
      if (job.status === 'succeeded' || job.status === 'failed' || Date.now() > stop) break;
    }
    if (job.status !== 'succeeded') {
      const logs = (await api('ada', 'GET', `/v1/jobs/${body.id}/logs`)).body;
      assert.fail(`${JSON.stringify(job)}\n${logs.lines.map((l: any) => l.text).join('\n')}`);
    }
    assert.equal(job.progress.output.ref, 'nlp/next-target@1');
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/next-target/versions/1');
    const md = v.methodMetadata;
    process.stderr.write(
      `transfer tiny/source (h32, 2 layers, 100-merge BPE) -> tiny/target (h48, 3 layers, 160-merge BPE): generated ${md.syntheticGenerated}, accepted ${md.syntheticAccepted}, ` +
        `kept ${md.syntheticKept} (rejected ${md.rejectedByDiscriminator}, duplicates ${md.duplicatesRemoved}, over-length ${md.overLength}); ` +
        `discriminator accuracy ${md.discriminatorAccuracy.toFixed(3)}; accuracy on ${md.evaluation.records} held-out real records: ` +
        `teacher ${md.teacherScore.toFixed(3)}, untrained target ${md.baselineScore.toFixed(3)}, student ${md.studentScore.toFixed(3)}; ` +
        `completion loss: teacher ${md.completionLoss.teacher.toFixed(3)}, untrained target ${md.completionLoss.baseline.toFixed(3)}, student ${md.completionLoss.student.toFixed(3)}; ` +
        `MMD² to the seeds: accepted ${md.mmdToSeeds.accepted.toFixed(4)}, unfiltered ${md.mmdToSeeds.unfiltered.toFixed(4)}; ` +
        `student = teacher on ${(100 * md.teacherStudentAgreement).toFixed(1)}% of ${md.agreementRecords} held-out synthetic prompts\n`,
    );
    assert.equal(md.kind, 'transfer');
    assert.equal(md.sourceBase, 'tiny/source');
    assert.equal(md.targetBase, 'tiny/target');
    assert.equal(md.sourceAdapter, 'nlp/next-source@1');
    assert.equal(md.evaluation.weak, false);
    assert.equal(md.seedHashes.length, 5);
    const { body: src } = await api('ada', 'GET', '/v1/repos/nlp/next-source/versions/1');
    assert.deepEqual(md.seedHashes, src.methodMetadata.transfer.seeds.hashes);
    assert.equal(md.discriminatorAccuracy, src.methodMetadata.transfer.discriminator.accuracy);
    assert.ok(md.syntheticKept > 50 && md.syntheticKept <= 400, `kept ${md.syntheticKept}`);
    assert.ok(md.syntheticGenerated >= md.syntheticAccepted);
    assert.ok(md.lossCurve.length >= 3);
    // The measured claim: better than the target base without the adapter, on real held-out data.
    assert.ok(md.studentScore > md.baselineScore + 0.2, `student ${md.studentScore} vs untrained target ${md.baselineScore}`);
    assert.ok(md.completionLoss.student < md.completionLoss.baseline);
    assert.ok(md.teacherStudentAgreement > 0 && md.agreementRecords > 0);
    // Filtering brings the synthetic prompts closer to the real seeds (as in the paper).
    assert.ok(md.mmdToSeeds.accepted < md.mmdToSeeds.unfiltered, JSON.stringify(md.mmdToSeeds));
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent ?? l.parentRef]),
      [
        ['transferred_from', 'nlp/next-source@1'],
        ['trained_from', 'hf:tiny/target'],
      ],
    );
    // Lineage through the API from the source side too.
    const { body: g } = await api('ada', 'GET', '/v1/repos/nlp/next-source/versions/1/lineage?direction=descendants');
    assert.ok(JSON.stringify(g).includes('nlp/next-target'), JSON.stringify(g));
    // Progress was reported per stage.
    let logs: any;
    for (const stop = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 100))) {
      logs = (await api('ada', 'GET', `/v1/jobs/${body.id}/logs`)).body;
      if (logs.lines.some((l: any) => /worker ended/.test(l.text)) || Date.now() > stop) break;
    }
    const text = logs.lines.map((l: any) => l.text).join('\n');
    for (const stage of ['reading the source version', 'generating and filtering', 'distilling', 'evaluating'])
      assert.ok(text.includes(`transfer: ${stage}`), stage);
  });

  it('generator source, sampled teacher, a local discriminator, no eval set: scored on the seeds only, flagged weak', async () => {
    // The stage-0 discriminator given as a local directory (spec.transfer.discriminator.path).
    const local = join(tmp, 'pulled-for-discriminator');
    await pull(new RegistryClient({ registry: reg.base, token: tok.ada }), 'nlp/next-source', '1', local);
    const res = await worker(
      transferSpec(
        {
          generator: 'source',
          candidates: 512,
          keep: 100,
          evalDataset: undefined,
          discriminator: { path: join(local, 'transfer', 'discriminator') },
          distillation: { teacherDecoding: 'sample' },
        },
        { output: { repository: 'nlp/next-target-weak' }, training: { maxSteps: 60, microBatchSize: 16, logEvery: 20 } },
      ),
    );
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/next-target-weak/versions/1');
    const md = v.methodMetadata;
    assert.equal(md.generator, 'source');
    assert.equal(md.teacherDecoding, 'sample');
    assert.equal(md.discriminator.ref, `file:${join(local, 'transfer', 'discriminator')}`);
    assert.deepEqual(md.evaluation, { set: 'seeds', weak: true, records: 5, metric: 'exact-match accuracy (greedy)' });
    assert.ok(md.syntheticGenerated <= 512 && md.syntheticKept > 0 && md.syntheticKept <= 100, JSON.stringify(md));
    assert.equal(v.lineage[0].relation, 'transferred_from');
  });

  it('a retry in the same work dir regenerates the same synthetic set and resumes distillation from its checkpoint', async () => {
    const workDir = join(tmp, 'retried-transfer');
    const spec = (repo: string) =>
      transferSpec(
        { candidates: 768, keep: 120 },
        { output: { repository: repo }, training: { maxSteps: 60, microBatchSize: 16, logEvery: 10, checkpointEvery: 20 } },
      );
    const first = await worker(spec('nlp/next-target-first'), undefined, workDir);
    assert.equal(first.code, 0, first.stderr + first.stdout);
    // The first run left its step-40 checkpoint (none is written at the last step).
    const again = await worker(spec('nlp/next-target-again'), undefined, workDir);
    assert.equal(again.code, 0, again.stderr + again.stdout);
    const [{ body: a }, { body: b }] = await Promise.all([
      api('ada', 'GET', '/v1/repos/nlp/next-target-first/versions/1'),
      api('ada', 'GET', '/v1/repos/nlp/next-target-again/versions/1'),
    ]);
    assert.equal(b.methodMetadata.resumedFromStep, 40);
    assert.equal(b.methodMetadata.datasetDigest, a.methodMetadata.datasetDigest, 'the same synthetic set');
    assert.deepEqual(b.methodMetadata.lossCurve, a.methodMetadata.lossCurve);
    assert.equal(b.methodMetadata.studentScore, a.methodMetadata.studentScore);
  });

  it('refuses bad transfer specs and a missing seed key with exit 65 and what to fix', async () => {
    const cases: [string, any, RegExp, Record<string, string>?][] = [
      ['no seed key (stage 1)', transferSpec(), /LOWRANK_SEED_KEY is not set/, { LOWRANK_SEED_KEY: '' }],
      [
        'no seed key (stage 0)',
        sourceSpec({ output: { repository: 'nlp/never' } }),
        /LOWRANK_SEED_KEY is not set/,
        { LOWRANK_SEED_KEY: '' },
      ],
      ['seedsPerPrompt > seedSamples', transferSpec({ seedsPerPrompt: 4, seedSamples: 3 }), /seedsPerPrompt must not exceed seedSamples/],
      ['dataset in mode transfer', transferSpec({}, { dataset: { path: trainPath } }), /dataset needs mode train/],
      ['topK', transferSpec({ sampling: { topK: 5 } }), /spec\.transfer\.sampling\.topK: .*set 0/],
      ['klWeight', transferSpec({ distillation: { klWeight: 1 } }), /spec\.transfer\.distillation\.klWeight/],
      ['remote eval set', transferSpec({ evalDataset: { uri: 's3://bucket/eval.jsonl' } }), /spec\.transfer\.evalDataset: give path/],
      [
        'more seeds than kept',
        transferSpec({ seedSamples: 8, seedsPerPrompt: 3 }),
        /spec\.transfer\.seedSamples: 8 asked, but nlp\/next-source@1 kept 5/,
      ],
      [
        'a missing eval set',
        transferSpec({ evalDataset: { path: join(tmp, 'nowhere.jsonl') } }),
        /spec\.transfer\.evalDataset: .*nowhere\.jsonl does not exist/,
      ],
      [
        'a wrong rank hint',
        transferSpec({ sourceAdapter: { repository: 'nlp/next-source', version: 1, rank: 4 } }),
        /sourceAdapter\.rank: 4 given, but nlp\/next-source@1 has r = 8/,
      ],
      [
        'a source without stage 0',
        transferSpec({ sourceAdapter: { repository: 'nlp/next-target', version: 1 } }),
        /not trained with training\.transferable/,
      ],
      [
        'a text dataset for stage 0',
        sourceSpec({ dataset: { path: join(tmp, 'text.jsonl'), maxSeqLength: 64 }, output: { repository: 'nlp/never' } }),
        /needs a prompt-completion dataset/,
      ],
    ];
    writeFileSync(
      join(tmp, 'text.jsonl'),
      `${corpus(40, 3)
        .map((text) => JSON.stringify({ text }))
        .join('\n')}\n`,
    );
    for (const [name, spec, why, env] of cases) {
      const res = await worker(spec, env ?? { LOWRANK_SEED_KEY: SEED_KEY });
      assert.equal(res.code, 65, `${name}: ${res.stderr}${res.stdout}`);
      assert.match(res.stderr + res.stdout, why, name);
    }
    const { status } = await api('ada', 'GET', '/v1/repos/nlp/never');
    assert.equal(status, 404, 'nothing was pushed');
  });
});
