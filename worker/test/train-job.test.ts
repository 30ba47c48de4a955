/**
 * AdapterJob mode train through `lora-worker run` and the local executor against a real
 * registry (PostgreSQL, Redis, MinIO), on a tiny random Llama with a real byte-level BPE
 * tokenizer.json made here: the next-digit task's eval loss really drops; the version
 * carries trained_from lineage, the loss curve and the dataset digest; a base stored in
 * the registry works as well as a local one; bad specs, datasets and model directories
 * fail at once with what to fix and leave the registry unchanged; a worker killed with
 * SIGKILL resumes from its checkpoint on the next run and its loss curve equals an
 * uninterrupted run's.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { pull, push } from '../../registry-api/src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { s3Config } from '../../registry-api/test/support/s3.ts';
import { type Executor, startExecutor } from '../src/executor/executor.ts';
import { readPeftAdapter } from '../src/peft/adapter-dir.ts';
import { pythonDir, referencePython } from './support/python-ref.ts';
import { registryApi, seedNlpTeam } from './support/registry-users.ts';
import { writeTaskJsonl, writeTinyBase } from './support/tiny-base.ts';
import { runWorker } from './support/worker-cli.ts';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'src', 'cli.ts');
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-train-job-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let reg: TestRegistry;
const tok = { admin: '', ada: '' };
const baseDir = join(tmp, 'base');
const dataPath = join(tmp, 'task.jsonl');
const redisUrl = `${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/8`;

const api = registryApi(() => reg.base, tok);

function trainSpec(over: { [k: string]: any } = {}): any {
  return {
    kind: 'AdapterJob',
    metadata: { name: 'next-digit' },
    spec: {
      mode: 'train',
      baseModel: { name: 'tiny/llama', path: baseDir, dtype: 'f32' },
      dataset: { path: dataPath, evalFraction: 0.1, maxSeqLength: 32 },
      method: { type: 'lora', rank: 8, alpha: 16, targetModules: ['all-linear'] },
      optimizer: { lr: 0.01 },
      schedule: { type: 'cosine', warmupSteps: 5 },
      training: { maxSteps: 120, microBatchSize: 8, evalEvery: 40, checkpointEvery: 40, logEvery: 20, precision: 'f32' },
      output: { repository: 'nlp/next-digit', tags: ['v1'] },
      seed: 7,
      ...over,
      // Datasets given by a case keep the tiny model's sequence length unless they set one.
      ...(over.dataset ? { dataset: { maxSeqLength: 32, ...over.dataset } } : {}),
    },
  };
}

const worker = (spec: unknown, workDir = mkdtempSync(join(tmp, 'work-'))) =>
  runWorker(spec, { registry: reg.base, token: tok.ada, tmp, workDir });

/** Runs the worker until it reports a checkpoint at or after `minStep`, then SIGKILLs it; the step. */
async function killAfterCheckpoint(spec: unknown, workDir: string, minStep: number, env: Record<string, string> = {}): Promise<number> {
  const specFile = join(mkdtempSync(join(tmp, 'kill-')), 'spec.json');
  writeFileSync(specFile, JSON.stringify(spec));
  const child = spawn(process.execPath, [CLI, 'run', '--spec', specFile, '--work-dir', workDir], {
    env: { ...process.env, LOWRANK_REGISTRY_URL: reg.base, LOWRANK_TOKEN: tok.ada, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let killedAfter = 0;
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  let buf = '';
  child.stdout.on('data', (chunk: Buffer) => {
    buf += chunk.toString();
    for (const line of buf.split('\n').slice(0, -1)) {
      const e = JSON.parse(line);
      if (e.stage === 'checkpointed' && e.step >= minStep && !killedAfter) {
        killedAfter = e.step;
        child.kill('SIGKILL');
      }
    }
    buf = buf.slice(buf.lastIndexOf('\n') + 1);
  });
  assert.equal(await exited, 'SIGKILL', 'the worker was killed mid-run');
  return killedAfter;
}

before(async () => {
  writeTinyBase(baseDir);
  writeTaskJsonl(dataPath, 400, 5);
  reg = await startRegistry({ redis: new Redis(redisUrl) });
  await reg.redis.flushdb();
  Object.assign(tok, await seedNlpTeam(reg.prisma));
});

describe('lora-worker run: AdapterJob train', () => {
  it('trains LoRA on the next-digit task: eval loss drops, the version has lineage, curve and digest', async () => {
    const res = await worker(trainSpec());
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.deepEqual(res.result.output, { repository: 'nlp/next-digit', version: 1, ref: 'nlp/next-digit@1' });
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/next-digit/versions/v1');
    assert.equal(v.method, 'lora');
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parentRef]),
      [['trained_from', 'hf:tiny/llama']],
    );
    const md = v.methodMetadata;
    assert.equal(md.kind, 'training');
    assert.equal(md.rank, 8);
    assert.equal(md.alpha, 16);
    assert.equal(md.targets.length, 7);
    assert.equal(md.datasetDigest, `sha256:${createHash('sha256').update(readFileSync(dataPath)).digest('hex')}`);
    assert.deepEqual(
      md.lossCurve.map((p: any) => p.step),
      [0, 1, 20, 40, 60, 80, 100, 120],
    );
    assert.ok(md.lossCurve.filter((p: any) => p.evalLoss !== undefined).length === 4, JSON.stringify(md.lossCurve));
    // The improvement is measured on held-out records: at least 30% lower eval loss.
    assert.ok(v.metrics.evalLoss < 0.7 * v.metrics.baseEvalLoss, `eval loss ${v.metrics.baseEvalLoss} -> ${v.metrics.evalLoss}`);
    assert.ok(Math.abs(v.metrics.evalPerplexity - Math.exp(v.metrics.evalLoss)) < 1e-9);
    // Progress went out as JSON lines with step, total, loss, tokens/s and ETA.
    const progress = res.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((e) => e.stage === 'training');
    assert.ok(progress.length >= 6);
    for (const p of progress) for (const k of ['step', 'total', 'loss', 'tokensPerSecond', 'etaSeconds']) assert.ok(k in p, k);
    // The output is a PEFT adapter whose config says how it was trained.
    const out = join(tmp, 'pulled');
    await pull(new RegistryClient({ registry: reg.base, token: tok.ada }), 'nlp/next-digit', 'v1', out);
    const adapter = readPeftAdapter(out);
    assert.equal(Object.keys(adapter.modules).length, 14);
    assert.equal(adapter.config.r, 8);
    assert.equal(adapter.config.lora_alpha, 16);
    assert.equal(adapter.config.base_model_name_or_path, 'tiny/llama');
    for (const m of Object.values(adapter.modules)) assert.equal(m.scale, 2);
  });

  it('reads its dataset from s3:// (Parquet as pyarrow writes it), with the digest of those bytes', async () => {
    const records = join(tmp, 's3-records.json');
    const rows = readFileSync(dataPath, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    writeFileSync(records, JSON.stringify({ train: rows, test: rows.slice(0, 4) }));
    const written = join(tmp, 's3-written');
    const py = spawnSync(referencePython(), [join(pythonDir, 'write_datasets.py'), records, written], {
      encoding: 'utf8',
      env: { ...process.env, PYTHONPATH: process.env.LOWRANK_PYARROW_PATH ?? '' },
    });
    assert.equal(py.status, 0, py.stderr);
    const parquet = readFileSync(join(written, 'train.snappy.parquet'));
    const bucket = `train-data-${Date.now().toString(36)}`;
    const s3 = new S3Client(s3Config());
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'task/train.parquet', Body: parquet }));
    s3.destroy();
    const spec = trainSpec({
      dataset: { uri: `s3://${bucket}/task/train.parquet`, evalFraction: 0.1 },
      training: { maxSteps: 20, microBatchSize: 8, logEvery: 10, precision: 'f32' },
      output: { repository: 'nlp/from-s3' },
    });
    const r = await runWorker(spec, {
      registry: reg.base,
      token: tok.ada,
      tmp,
      env: {
        AWS_ACCESS_KEY_ID: serviceEnv('S3_ACCESS_KEY_ID'),
        AWS_SECRET_ACCESS_KEY: serviceEnv('S3_SECRET_ACCESS_KEY'),
        AWS_ENDPOINT_URL_S3: serviceEnv('S3_ENDPOINT'),
        AWS_REGION: 'us-east-1',
      },
    });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/from-s3/versions/1');
    assert.equal(v.methodMetadata.datasetDigest, `sha256:${createHash('sha256').update(parquet).digest('hex')}`);
    assert.equal(v.methodMetadata.records, 400);
    assert.equal(v.methodMetadata.datasetFormat, 'prompt-completion');
  });

  it('trains DoRA and rsLoRA (gaussian init) from a base version stored in the registry, with packing and chat data', async () => {
    const client = new RegistryClient({ registry: reg.base, token: tok.ada });
    await client.json('POST', '/v1/repos', { namespace: 'nlp', name: 'tiny-base', baseModel: 'tiny/llama' });
    const pushed = await push(client, baseDir, 'nlp/tiny-base', { lineage: [{ relation: 'trained_from', parentRef: 'hf:tiny/llama' }] });
    const chat = join(tmp, 'chat.jsonl');
    const lines = readFileSync(dataPath, 'utf8').trim().split('\n').slice(0, 120);
    writeFileSync(
      chat,
      lines
        .map((l) => {
          const r = JSON.parse(l);
          return JSON.stringify({
            messages: [
              { role: 'user', content: r.prompt },
              { role: 'assistant', content: r.completion.trim() },
            ],
          });
        })
        .join('\n'),
    );
    for (const [type, dataset] of [
      ['dora', { path: dataPath, evalFraction: 0.1, maxSeqLength: 32, packing: true }],
      ['rslora', { path: chat, evalFraction: 0.1, maxSeqLength: 48, format: 'chat' }],
    ] as const) {
      const res = await worker(
        trainSpec({
          baseModel: { repository: 'nlp/tiny-base', version: pushed.number },
          dataset,
          method: {
            type,
            rank: 4,
            alpha: 8,
            targetModules: ['q_proj', 'v_proj', 'down_proj'],
            // DoRA with dropout (PEFT's separate DoRA dropout path), under activation recomputation.
            ...(type === 'rslora' ? { init: 'gaussian' } : { dropout: 0.05 }),
          },
          training: { maxSteps: 30, microBatchSize: 4, logEvery: 10, ...(type === 'dora' ? { recompute: true } : {}) },
          output: { repository: `nlp/${type}` },
        }),
      );
      assert.equal(res.code, 0, res.stderr + res.stdout);
      const { body: v } = await api('ada', 'GET', `/v1/repos/nlp/${type}/versions/1`);
      assert.deepEqual(
        v.lineage.map((l: any) => [l.relation, l.parent]),
        [['trained_from', `nlp/tiny-base@${pushed.number}`]],
      );
      assert.equal(v.method, type);
      assert.ok(v.metrics.evalLoss < v.metrics.baseEvalLoss, `${type}: ${v.metrics.baseEvalLoss} -> ${v.metrics.evalLoss}`);
      const out = join(tmp, `pulled-${type}`);
      await pull(client, `nlp/${type}`, '1', out);
      const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
      assert.equal(config.use_dora, type === 'dora');
      assert.equal(config.use_rslora, type === 'rslora');
      assert.equal(config.lora_dropout, type === 'dora' ? 0.05 : 0);
      assert.equal(config.init_lora_weights, type === 'rslora' ? 'gaussian' : true);
      assert.equal(v.methodMetadata.datasetFormat, type === 'rslora' ? 'chat' : 'prompt-completion');
    }
  });

  it('fails bad specs, datasets and model directories at once (exit 65) with what to fix; the registry is unchanged', async () => {
    const versions = await reg.prisma.version.count();
    const repos = await reg.prisma.repository.count();
    const file = (name: string, text: string) => {
      const p = join(tmp, name);
      writeFileSync(p, text);
      return p;
    };
    const model = (name: string, change: (dir: string) => void) => {
      const dir = join(tmp, name);
      cpSync(baseDir, dir, { recursive: true });
      change(dir);
      return dir;
    };
    const good = readFileSync(dataPath, 'utf8').split('\n');
    const cases: [string, any, RegExp][] = [
      // spec
      [
        'pissa rank',
        trainSpec({ method: { type: 'pissa', rank: 40, targetModules: ['all-linear'] } }),
        /spec\.method: r = 40 exceeds min\(out, in\) = 32 of model\.layers\.0\.self_attn\.q_proj/,
      ],
      ['transfer', trainSpec({ mode: 'transfer' }), /mode transfer needs baseModel \(the target base\) and transfer/],
      ['no dataset', trainSpec({ dataset: undefined }), /mode train needs baseModel, dataset and method/],
      [
        'hub only',
        trainSpec({ baseModel: { name: 'meta-llama/Llama-3.2-1B' } }),
        /spec\.baseModel\.path: this worker does not download from the Hub/,
      ],
      ['min lr', trainSpec({ schedule: { type: 'cosine', minLrRatio: 0.1 } }), /spec\.schedule\.minLrRatio/],
      [
        'seq too long',
        trainSpec({ dataset: { path: dataPath, maxSeqLength: 4096 } }),
        /maxSeqLength: 4096 exceeds the model's max_position_embeddings \(64\)/,
      ],
      ['bad layer', trainSpec({ method: { type: 'lora', rank: 4, layersToTransform: [5] } }), /spec\.method: layer 5 is out of range/],
      [
        'eval all',
        trainSpec({ dataset: { path: dataPath, evalFraction: 0.5, maxSamples: 1, maxSeqLength: 32 } }),
        /evalFraction 0\.5 leaves no training record out of 1/,
      ],
      // dataset
      [
        'bad json',
        trainSpec({ dataset: { path: file('bad.jsonl', [good[0], good[1], '{"prompt": "x", ', good[2]].join('\n')) } }),
        /bad\.jsonl:3: not valid JSON/,
      ],
      [
        'missing field',
        trainSpec({ dataset: { path: file('missing.jsonl', [good[0], '{"prompt": "next: 1 ="}'].join('\n')) } }),
        /missing\.jsonl:2: field "completion" is missing/,
      ],
      [
        'wrong type',
        trainSpec({ dataset: { path: file('type.jsonl', '{"text": 42}\n') } }),
        /type\.jsonl:1: field "text" must be a string, got number/,
      ],
      [
        'not object',
        trainSpec({ dataset: { path: file('arr.jsonl', '[1, 2]\n') } }),
        /arr\.jsonl:1: each line \(record\) must be a JSON object/,
      ],
      [
        'unknown fields',
        trainSpec({ dataset: { path: file('fields.jsonl', '{"question": "q"}\n') } }),
        /fields\.jsonl:1: cannot tell the record format from its fields \(question\)/,
      ],
      [
        'no assistant',
        trainSpec({ dataset: { path: file('chat-bad.jsonl', '{"messages": [{"role": "user", "content": "hi"}]}\n') } }),
        /chat-bad\.jsonl:1: messages has no assistant turn/,
      ],
      ['empty', trainSpec({ dataset: { path: file('empty.jsonl', '\n\n') } }), /empty\.jsonl has no records/],
      ['parquet', trainSpec({ dataset: { path: file('data.parquet', 'PAR1') } }), /data\.parquet is not a readable Parquet file/],
      [
        'gs uri',
        trainSpec({ dataset: { uri: 'gs://bucket/data.jsonl' } }),
        /spec\.dataset\.uri: gs:\/\/ datasets are not fetched by this worker; use s3:\/\/, https:\/\/ or file:\/\//,
      ],
      ['no file', trainSpec({ dataset: { path: join(tmp, 'nowhere.jsonl') } }), /spec\.dataset\.path: .*nowhere\.jsonl does not exist/],
      // model directory
      ['no dir', trainSpec({ baseModel: { path: join(tmp, 'no-model') } }), /no-model is not a directory/],
      [
        'no config',
        trainSpec({ baseModel: { path: model('m-noconfig', (d) => rmSync(join(d, 'config.json'))) } }),
        /m-noconfig has no config\.json/,
      ],
      [
        'no tokenizer',
        trainSpec({ baseModel: { path: model('m-notok', (d) => rmSync(join(d, 'tokenizer.json'))) } }),
        /m-notok: tokenizer\.json is missing/,
      ],
      [
        'bad tokenizer',
        trainSpec({ baseModel: { path: model('m-badtok', (d) => writeFileSync(join(d, 'tokenizer.json'), '{"model":')) } }),
        /tokenizer\.json is not valid JSON/,
      ],
      [
        'no weights',
        trainSpec({ baseModel: { path: model('m-noweights', (d) => rmSync(join(d, 'model.safetensors'))) } }),
        /spec\.baseModel: .*safetensors/,
      ],
      [
        'bad config',
        trainSpec({
          baseModel: {
            path: model('m-badcfg', (d) =>
              writeFileSync(
                join(d, 'config.json'),
                JSON.stringify({ ...JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')), hidden_size: 30 }),
              ),
            ),
          },
        }),
        /spec\.baseModel: /,
      ],
    ];
    const wrong: string[] = [];
    // Four workers at a time: the cases are independent, the machine is small.
    for (let i = 0; i < cases.length; i += 4) {
      await Promise.all(
        cases.slice(i, i + 4).map(async ([name, spec, message]) => {
          const res = await worker(spec);
          if (res.code !== 65 || res.result?.status !== 'failed' || !message.test(res.result.message))
            wrong.push(`${name}: exit ${res.code}, ${res.result?.message ?? res.stderr}`);
        }),
      );
    }
    assert.deepEqual(wrong, []);
    assert.equal(await reg.prisma.version.count(), versions);
    assert.equal(await reg.prisma.repository.count(), repos);
  });

  it('resumes a SIGKILLed worker from its last checkpoint: the loss curve continues and equals an uninterrupted run', async () => {
    const spec = trainSpec({
      training: { maxSteps: 1500, microBatchSize: 8, evalEvery: 250, checkpointEvery: 50, logEvery: 50 },
      output: { repository: 'nlp/resumed' },
    });
    const workDir = join(tmp, 'kill-work');
    mkdirSync(workDir);
    const killedAfter = await killAfterCheckpoint(spec, workDir, 150);
    assert.ok(killedAfter >= 150 && killedAfter < 1500, `killed after step ${killedAfter}`);
    assert.equal(await reg.prisma.repository.count({ where: { name: 'resumed' } }), 0);

    const resumed = await worker(spec, workDir);
    assert.equal(resumed.code, 0, resumed.stderr + resumed.stdout);
    const events = resumed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const at = events.find((e) => e.event === 'resumed');
    assert.ok(at && at.step >= killedAfter, `resumed at ${at?.step}, the last checkpoint seen was ${killedAfter}`);
    assert.ok(
      events.filter((e) => e.stage === 'training').every((e) => e.step > at.step),
      'no step before the checkpoint is redone',
    );
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/resumed/versions/1');
    assert.equal(v.methodMetadata.resumedFromStep, at.step);

    const straight = await worker({ ...spec, spec: { ...spec.spec, output: { repository: 'nlp/straight' } } });
    assert.equal(straight.code, 0, straight.stderr + straight.stdout);
    const { body: s } = await api('ada', 'GET', '/v1/repos/nlp/straight/versions/1');
    // Same seed, same data order, same thread count: the resumed curve is the uninterrupted one.
    assert.deepEqual(v.methodMetadata.lossCurve, s.methodMetadata.lossCurve);
    assert.equal(v.metrics.evalLoss, s.metrics.evalLoss);
  });

  it('a retry on another machine (empty work dir) resumes from the checkpoint kept in the registry', async () => {
    const spec = trainSpec({
      training: { maxSteps: 1500, microBatchSize: 8, evalEvery: 250, checkpointEvery: 50, logEvery: 50 },
      output: { repository: 'nlp/moved' },
    });
    const submitted = await api('ada', 'POST', '/v1/jobs?executor=external', spec);
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    const env = { LOWRANK_JOB_ID: submitted.body.id as string };
    const firstNode = mkdtempSync(join(tmp, 'node-a-'));
    const killedAfter = await killAfterCheckpoint(spec, firstNode, 150, env);
    const kept = await api('ada', 'GET', `/v1/jobs/${env.LOWRANK_JOB_ID}/checkpoints`);
    assert.deepEqual(
      kept.body.items.map((c: { step: number }) => c.step),
      [killedAfter, killedAfter - 50],
      'the registry keeps the newest two checkpoints',
    );
    rmSync(firstNode, { recursive: true, force: true }); // that node is gone

    const moved = await runWorker(spec, { registry: reg.base, token: tok.ada, tmp, env });
    assert.equal(moved.code, 0, moved.stderr + moved.stdout);
    const events = moved.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(events.find((e) => e.event === 'checkpoint-downloaded')?.step, killedAfter);
    assert.equal(events.find((e) => e.event === 'resumed')?.step, killedAfter);
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/moved/versions/1');
    assert.equal(v.methodMetadata.resumedFromStep, killedAfter);
    // The uninterrupted run of the same settings (previous test): the same curve.
    const { status, body: s } = await api('ada', 'GET', '/v1/repos/nlp/straight/versions/1');
    assert.equal(status, 200, 'the uninterrupted run of the previous test is the reference');
    assert.deepEqual(v.methodMetadata.lossCurve, s.methodMetadata.lossCurve);
    // The job ended: its checkpoints were released.
    assert.deepEqual((await api('ada', 'GET', `/v1/jobs/${env.LOWRANK_JOB_ID}/checkpoints`)).body.items, []);
    assert.equal((await api('ada', 'GET', `/v1/jobs/${env.LOWRANK_JOB_ID}`)).body.status, 'succeeded');
  });
});

describe('local executor: a REST-submitted AdapterJob', () => {
  let executor: Executor;
  const workRoot = join(tmp, 'executor-work');
  const job = async (id: string) => (await api('ada', 'GET', `/v1/jobs/${id}`)).body;
  before(async () => {
    executor = await startExecutor({
      redisUrl,
      registryUrl: reg.base,
      token: tok.admin,
      concurrency: 1,
      logsDir: join(tmp, 'logs'),
      workRoot,
    });
    await executor.ready();
  });
  after(() => executor?.close());

  it('retries a worker killed mid-run (SIGKILL), and the retry resumes from the checkpoint in the kept work dir', async () => {
    const spec = trainSpec({
      training: { maxSteps: 3000, microBatchSize: 8, checkpointEvery: 50, logEvery: 100 },
      retry: { backoffLimit: 2 },
      output: { repository: 'nlp/executor-resumed' },
    });
    const { body } = await api('ada', 'POST', '/v1/jobs', spec);
    const checkpoints = join(workRoot, body.id, 'checkpoints');
    let step = 0;
    for (const stop = Date.now() + 120_000; step < 150; await new Promise((r) => setTimeout(r, 20))) {
      assert.ok(Date.now() < stop, 'no checkpoint at step >= 150 in time');
      const { readdirSync, existsSync } = await import('node:fs');
      const done = existsSync(checkpoints)
        ? readdirSync(checkpoints).filter((d) => existsSync(join(checkpoints, d, 'checkpoint.json')))
        : [];
      step = Math.max(0, ...done.map((d) => Number(d.slice('step-'.length))));
    }
    // The executor's worker is this process's only `lora-worker run` child.
    const ps = await run('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)]);
    const worker = ps.stdout.split('\n').find((l) => /cli\.ts run --spec/.test(l));
    assert.ok(worker, ps.stdout);
    process.kill(Number(worker.trim().split(/\s+/)[0]), 'SIGKILL');
    let j: any;
    for (const stop = Date.now() + 120_000; ; await new Promise((r) => setTimeout(r, 200))) {
      j = await job(body.id);
      if (j.status === 'succeeded' || j.status === 'failed' || Date.now() > stop) break;
    }
    assert.equal(j.status, 'succeeded', JSON.stringify(j));
    assert.equal(j.attempts, 2);
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/executor-resumed/versions/1');
    assert.ok(v.methodMetadata.resumedFromStep >= step, `resumed from ${v.methodMetadata.resumedFromStep}, checkpoint seen at ${step}`);
    const steps = v.methodMetadata.lossCurve.map((p: any) => p.step);
    assert.deepEqual(
      steps,
      [...steps].sort((a: number, b: number) => a - b),
      'the curve continues in order',
    );
    assert.equal(new Set(steps).size, steps.length, 'no step twice');
  });

  it('publishes PiSSA as its rank-2r export and EVA with its rank/alpha patterns, through the registry', async () => {
    const client = new RegistryClient({ registry: reg.base, token: tok.ada });
    for (const [type, extra] of [
      ['pissa', { pissa: { niter: 2, oversampling: 2 } }],
      ['eva', { eva: { tau: 0.95, batchSize: 8, batches: 300 } }],
    ] as const) {
      const res = await worker(
        trainSpec({
          method: { type, rank: 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'up_proj', 'down_proj'], ...extra },
          training: { maxSteps: 30, microBatchSize: 8, logEvery: 10 },
          output: { repository: `nlp/init-${type}` },
        }),
      );
      assert.equal(res.code, 0, res.stderr + res.stdout);
      const { body: v } = await api('ada', 'GET', `/v1/repos/nlp/init-${type}/versions/1`);
      assert.equal(v.method, type);
      assert.ok(v.metrics.evalLoss < v.metrics.baseEvalLoss, `${type}: ${v.metrics.baseEvalLoss} -> ${v.metrics.evalLoss}`);
      assert.equal(v.methodMetadata.initRecipe.init, type);
      const out = join(tmp, `pulled-init-${type}`);
      await pull(client, `nlp/init-${type}`, '1', out);
      const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
      const adapter = readPeftAdapter(out);
      if (type === 'pissa') {
        assert.equal(config.r, 8);
        assert.equal(config.lora_alpha, 16);
        assert.equal(v.methodMetadata.exportedRank, 8);
        for (const m of Object.values(adapter.modules)) assert.equal(m.r, 8);
      } else {
        const ranks = v.methodMetadata.initRecipe.ranks as Record<string, number>;
        assert.equal(
          Object.values(ranks).reduce((a, b) => a + b, 0),
          4 * 10,
        );
        for (const [path, r] of Object.entries(ranks)) {
          assert.equal(adapter.modules[path]?.r, r, path);
          assert.equal(adapter.modules[path]?.scale, 2, `${path}: α·rank/r keeps the scale`);
        }
      }
    }
  });

  it('runs it to a version linked to the job, with training progress on the job record', async () => {
    const { status, body } = await api('ada', 'POST', '/v1/jobs', trainSpec({ output: { repository: 'nlp/via-rest' } }));
    assert.equal(status, 201, JSON.stringify(body));
    const end = Date.now() + 120_000;
    let job: any;
    for (;;) {
      job = (await api('ada', 'GET', `/v1/jobs/${body.id}`)).body;
      if (job.status === 'succeeded' || job.status === 'failed' || Date.now() > end) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    assert.equal(job.progress.output.ref, 'nlp/via-rest@1');
    const { body: v } = await api('ada', 'GET', '/v1/repos/nlp/via-rest/versions/1');
    assert.equal(v.job, body.id);
    // The job can end before the executor has shipped the worker's last lines: wait for its end line.
    let logs: any;
    for (const stop = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 100))) {
      logs = (await api('ada', 'GET', `/v1/jobs/${body.id}/logs`)).body;
      if (logs.lines.some((l: any) => /worker ended/.test(l.text)) || Date.now() > stop) break;
    }
    assert.ok(
      logs.lines.some((l: any) => /"stage":"training".*"tokensPerSecond"/.test(l.text)),
      'training progress is in the job logs',
    );
  });
});
