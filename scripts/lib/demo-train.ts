/**
 * The demo's training part, measured end to end:
 *   - a small Llama-shaped base (4 layers, hidden 64) with a byte-level BPE tokenizer.json
 *     learned from a synthetic corpus, pretrained ReLoRA-style by our own engine on that
 *     corpus (worker/src/pretrain/relora.ts), cached under .lowrank/cache after the first
 *     run, and pushed to the registry as demo/tiny-llama;
 *   - two downstream tasks ("next: 3 7 1 0 =" -> " 4 8 2 1", "prev: ..." -> " 2 6 0 9"), each
 *     trained as a LoRA adapter by an AdapterJob submitted over REST and run by the local
 *     executor;
 *   - before/after: held-out eval loss (measured by the worker) and task accuracy by
 *     greedy generation on test prompts none of which is in the training data.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { pull, push } from '../../registry-api/src/cli/transfer.ts';
import { corpus, digitTask, type TaskRecord } from '../../worker/src/data/synthetic.ts';
import { taskAccuracy } from '../../worker/src/eval/task-accuracy.ts';
import { writeTinyLlama } from '../../worker/src/model/tiny-llama.ts';
import { TrainModel } from '../../worker/src/native/train.ts';
import { readPeftAdapter } from '../../worker/src/peft/adapter-dir.ts';
import { pretrainRelora, textExamples } from '../../worker/src/pretrain/relora.ts';
import { TextTokenizer } from '../../worker/src/tokenizer/tokenizer.ts';
import { trainByteLevelBpe, writeTokenizer } from '../../worker/src/tokenizer/train-bpe.ts';

type Say = (s: string) => void;
export type VersionOut = { repository: string; version: number; ref: string };
export type RunJob = (spec: unknown) => Promise<VersionOut>;

const SHAPE = { hiddenSize: 64, intermediateSize: 128, layers: 4, heads: 4, kvHeads: 2, maxPositions: 128, seed: 3 };
const PRETRAIN = { rounds: 4, stepsPerRound: 120, rank: 32, lr: 3e-3, batchRows: 8, seqLength: 128, seed: 1 };
const CORPUS = { lines: 6000, seed: 1, merges: 200 };
const DIGITS = 4;
const BASE_REPO = 'demo/tiny-llama';

const fmt = (x: number) => x.toFixed(3);

/** The pretrained base directory, made once per settings and then reused. */
async function pretrainedBase(cacheRoot: string, say: Say): Promise<{ dir: string; key: string; info: Record<string, unknown> }> {
  const key = createHash('sha256')
    .update(JSON.stringify({ SHAPE, PRETRAIN, CORPUS, v: 1 }))
    .digest('hex')
    .slice(0, 12);
  const dir = join(cacheRoot, `demo-base-${key}`);
  const infoFile = join(dir, 'pretraining.json');
  if (existsSync(infoFile)) {
    say(`base model: cached at ${dir}`);
    return { dir, key, info: JSON.parse((await import('node:fs')).readFileSync(infoFile, 'utf8')) };
  }
  const started = performance.now();
  const lines = corpus(CORPUS.lines, CORPUS.seed);
  const taskText = [...digitTask('next', 200, 99, DIGITS), ...digitTask('prev', 200, 98, DIGITS)].map((r) => r.prompt + r.completion);
  const files = trainByteLevelBpe([...lines, ...taskText], CORPUS.merges, SHAPE.maxPositions);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  writeTokenizer(tmp, files);
  writeTinyLlama(tmp, { vocabSize: files.vocabSize, ...SHAPE });
  const tok = TextTokenizer.load(tmp);
  const examples = textExamples(lines, tok);
  say(
    `base model: a Llama-shaped model (${SHAPE.layers} layers, hidden ${SHAPE.hiddenSize}, vocab ${files.vocabSize} byte-level BPE tokens learned from the corpus), ` +
      `pretrained ReLoRA-style by our engine on ${CORPUS.lines} synthetic lines (${PRETRAIN.rounds} rounds x ${PRETRAIN.stepsPerRound} steps, rank ${PRETRAIN.rank} on every projection, merged after each round)...`,
  );
  const curve: { step: number; loss: number; evalLoss: number }[] = [];
  const r = await pretrainRelora(tmp, tok, examples.slice(300), examples.slice(0, 300), {
    ...PRETRAIN,
    onRound: (i, loss, evalLoss) => {
      curve.push({ step: (i + 1) * PRETRAIN.stepsPerRound, loss, evalLoss });
      say(`  round ${i + 1}/${PRETRAIN.rounds}: train loss ${fmt(loss)}, held-out corpus loss ${fmt(evalLoss)}`);
    },
  });
  const seconds = (performance.now() - started) / 1000;
  const corpusDigest = `sha256:${createHash('sha256').update(lines.join('\n')).digest('hex')}`;
  const info = { corpusEvalLossBefore: r.before, corpusEvalLossAfter: r.after, steps: r.steps, seconds, corpusDigest, curve };
  writeFileSync(join(tmp, 'pretraining.json'), `${JSON.stringify(info, null, 2)}\n`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(cacheRoot, { recursive: true });
  renameSync(tmp, dir);
  say(`  held-out corpus loss ${fmt(r.before)} -> ${fmt(r.after)} in ${seconds.toFixed(0)} s; cached at ${dir}`);
  return { dir, key, info };
}

/** demo/tiny-llama at the version tagged with the base's settings key (pushed once). */
async function registeredBase(client: RegistryClient, dir: string, key: string, info: Record<string, unknown>): Promise<number> {
  const tag = `pretrained-${key}`;
  const found = await client.json<{ number: number }>('GET', `/v1/repos/${BASE_REPO}/versions/${tag}`).catch(() => undefined);
  if (found) return found.number;
  await client
    .request('POST', '/v1/repos', {
      body: {
        namespace: 'demo',
        name: 'tiny-llama',
        baseModel: BASE_REPO,
        visibility: 'internal',
        description: 'The demo base model, pretrained by our engine',
      },
    })
    .catch((err: Error & { code?: string }) => {
      if (err.code !== 'conflict') throw err;
    });
  const pushed = await push(client, dir, BASE_REPO, {
    tags: [tag],
    method: 'relora-pretrain',
    methodMetadata: {
      kind: 'training',
      method: 'relora',
      rank: PRETRAIN.rank,
      alpha: PRETRAIN.rank,
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      datasetDigest: info.corpusDigest,
      lossCurve: info.curve,
      rounds: PRETRAIN.rounds,
    },
    metrics: { corpusEvalLossBefore: info.corpusEvalLossBefore, corpusEvalLossAfter: info.corpusEvalLossAfter },
  });
  return pushed.number;
}

export interface TrainedTask {
  op: 'next' | 'prev';
  out: VersionOut;
  test: TaskRecord[];
}

export interface TrainingDemo {
  baseDir: string;
  baseRef: string;
  tasks: TrainedTask[];
  tokenizer: TextTokenizer;
}

function writeJsonl(path: string, records: TaskRecord[]): void {
  writeFileSync(path, `${records.map((r) => JSON.stringify(r)).join('\n')}\n`);
}

export async function trainingDemo(client: RegistryClient, work: string, runJob: RunJob, say: Say): Promise<TrainingDemo> {
  const made = await pretrainedBase(join(work, '..', 'cache'), say);
  const baseVersion = await registeredBase(client, made.dir, made.key, made.info);
  const baseRef = `${BASE_REPO}@${baseVersion}`;
  // Measure on the registered base, the one the jobs train on (a re-made cache could differ).
  const dir = join(work, 'base', String(baseVersion));
  await pull(client, BASE_REPO, String(baseVersion), dir);
  const tok = TextTokenizer.load(dir);
  const model = await TrainModel.load(dir);
  const tasks: TrainedTask[] = [];
  for (const [op, seed] of [
    ['next', 5],
    ['prev', 6],
  ] as const) {
    const train = digitTask(op, 2000, seed, DIGITS);
    const seen = new Set(train.map((r) => r.prompt));
    // Test prompts the adapter never saw.
    const test = digitTask(op, 400, seed + 1000, DIGITS)
      .filter((r) => !seen.has(r.prompt))
      .slice(0, 200);
    const data = join(work, `${op}-digit.jsonl`);
    writeJsonl(data, train);
    model.setAdapter({});
    const before = await taskAccuracy(model, tok, test, { maxNewTokens: 2 * DIGITS + 2 });
    say(`training a LoRA adapter on "${op}" (${train[0]?.prompt}${train[0]?.completion}): AdapterJob over REST, run by the local executor`);
    const out = await runJob({
      kind: 'AdapterJob',
      metadata: { name: `demo-${op}-digit` },
      spec: {
        mode: 'train',
        baseModel: { repository: BASE_REPO, version: baseVersion, dtype: 'f32' },
        dataset: { path: data, format: 'prompt-completion', evalFraction: 0.05, maxSeqLength: 32 },
        method: { type: 'lora', rank: 8, alpha: 16, targetModules: ['all-linear'] },
        optimizer: { lr: 0.003 },
        schedule: { type: 'cosine', warmupSteps: 10 },
        training: { maxSteps: 300, microBatchSize: 16, evalEvery: 100, checkpointEvery: 100, logEvery: 25, precision: 'f32' },
        output: {
          repository: `demo/${op}-digit`,
          tags: ['trained'],
          visibility: 'internal',
          description: `LoRA for the "${op}" digit task`,
        },
        seed: 7,
      },
    });
    const v = await client.json<{ metrics: Record<string, number> }>('GET', `/v1/repos/${out.repository}/versions/${out.version}`);
    const pulled = join(work, 'pulled', `${op}-digit`);
    await pull(client, out.repository, String(out.version), pulled);
    model.setAdapter(readPeftAdapter(pulled).modules);
    const after = await taskAccuracy(model, tok, test, { maxNewTokens: 2 * DIGITS + 2 });
    const sample = after.samples[0];
    say(
      `  ${out.ref}: held-out eval loss ${fmt(v.metrics.baseEvalLoss as number)} -> ${fmt(v.metrics.evalLoss as number)} ` +
        `(perplexity ${fmt(v.metrics.baseEvalPerplexity as number)} -> ${fmt(v.metrics.evalPerplexity as number)}); ` +
        `task accuracy on ${test.length} unseen prompts (greedy): base ${pct(before.accuracy)} -> adapter ${pct(after.accuracy)}` +
        (sample ? ` (e.g. "${sample.prompt}" -> "${sample.got}")` : ''),
    );
    tasks.push({ op, out, test });
  }
  return { baseDir: dir, baseRef, tasks, tokenizer: tok };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Accuracy of a registry adapter version on each task's test prompts. */
export async function accuracyOf(client: RegistryClient, demo: TrainingDemo, ref: VersionOut, work: string): Promise<string> {
  const dir = join(work, 'pulled', `${ref.repository.replace('/', '_')}-${ref.version}`);
  await pull(client, ref.repository, String(ref.version), dir);
  const model = await TrainModel.load(demo.baseDir);
  model.setAdapter(readPeftAdapter(dir).modules);
  const parts: string[] = [];
  for (const t of demo.tasks) {
    const a = await taskAccuracy(model, demo.tokenizer, t.test, { maxNewTokens: 2 * DIGITS + 2 });
    parts.push(`${t.op} ${pct(a.accuracy)}`);
  }
  return parts.join(', ');
}
