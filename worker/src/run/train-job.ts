/**
 * AdapterJob mode train: base model + tokenizer + JSONL dataset -> a LoRA-family adapter
 * trained by the native engine, published as a PEFT directory with trained_from lineage
 * and its loss curve. Data order is a pure function of (seed, step), so a checkpoint
 * needs only the engine state, the step and the curve: a retry (the local executor keeps
 * the work dir) resumes from the newest complete checkpoint and the curve continues.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { chunk, type Row, toBatch, toRows } from '../data/batches.ts';
import { type PreparedDataset, permutation, prepareDataset } from '../data/dataset.ts';
import { checkDatasetUri, fetchDataset } from '../data/remote.ts';
import { backendInfo } from '../native/backend.ts';
import {
  type ComputePrecision,
  type DeviceChoice,
  type OptimizerOptions,
  PROJECTIONS,
  type Projection,
  type TokenBatch,
  type TrainEngineKind,
  TrainModel,
} from '../native/train.ts';
import { loadCheckpoint, saveCheckpoint } from '../native/train-checkpoint.ts';
import { TextTokenizer } from '../tokenizer/tokenizer.ts';
import { seedKey } from '../transfer/seed-crypto.ts';
import { checkTransferableData, runStage0 } from '../transfer/stage0.ts';
import { type AdapterInit, initAdapter } from './adapter-init.ts';
import { type ResolvedBase, resolveBase } from './base-model.ts';
import { pullLatestCheckpoint, pushCheckpoint } from './remote-checkpoints.ts';
import { writeTrainedAdapter } from './trained-adapter.ts';
import type { JobOutcome, RunContext } from './types.ts';

/** Methods the native engine trains today; the others are refused by name. */
const SUPPORTED = ['lora', 'rslora', 'dora', 'pissa', 'lora-ga', 'eva', 'lora-sb'] as const;

export interface CurvePoint {
  step: number;
  loss: number;
  evalLoss?: number;
}

type Spec = AdapterJobSpecDefaulted;

function refuse(field: string, what: string): never {
  throw new LowrankError('invalid_spec', `${field}: ${what}`);
}

/** Spec checks the schema cannot make (what this worker and engine support). */
export function checkSpec(spec: Spec) {
  if (spec.mode !== 'train') refuse('spec.mode', `${spec.mode} AdapterJobs are not run by this worker yet; mode train is`);
  const method = spec.method ?? refuse('spec.method', 'is required in mode train');
  const dataset = spec.dataset ?? refuse('spec.dataset', 'is required in mode train');
  if (!(SUPPORTED as readonly string[]).includes(method.type))
    refuse('spec.method.type', `${method.type} is not supported by the native training engine yet; ${SUPPORTED.join(', ')} are`);
  if (method.modulesToSave?.length) refuse('spec.method.modulesToSave', 'training embed_tokens or lm_head in full is not supported yet');
  if (method.bias !== 'none') refuse('spec.method.bias', `${method.bias}: only "none" is supported (no bias terms are trained)`);
  if (method.loraBias) refuse('spec.method.loraBias', 'lora_B biases are not supported by the engine');
  if (!dataset.path && !dataset.uri) refuse('spec.dataset', 'give path (a local file or directory) or uri');
  if (dataset.uri) checkDatasetUri(dataset.uri, 'spec.dataset.uri');
  if (spec.schedule && spec.schedule.minLrRatio !== 0)
    refuse('spec.schedule.minLrRatio', 'the engine decays to 0 (transformers semantics); set 0');
  if (spec.schedule?.warmupSteps !== undefined && spec.schedule.warmupRatio !== undefined)
    refuse('spec.schedule', 'set warmupSteps or warmupRatio, not both');
  return { method, dataset };
}

type Method = NonNullable<Spec['method']>;
type DatasetSpec = NonNullable<Spec['dataset']>;

/** A finished training run: the model (adapter set) and what the version records about it. */
export interface TrainedRun {
  base: ResolvedBase;
  tok: TextTokenizer;
  model: TrainModel;
  data: PreparedDataset;
  method: Method;
  dataset: DatasetSpec;
  alpha: number;
  useRslora: boolean;
  targets: Projection[];
  total: number;
  mb: number;
  accum: number;
  opt: { lr: number; betas: number[]; eps: number; weightDecay: number; maxGradNorm: number };
  schedule: NonNullable<Spec['schedule']> & { warmupSteps: number };
  curve: CurvePoint[];
  lastLoss: number;
  final: { loss: number; perplexity: number; tokens: number } | undefined;
  baseEval: number | undefined;
  resumedFrom: number | undefined;
  /** How the adapter was initialised, and so how it is exported (PiSSA/LoRA-GA: rank 2r for the original base). */
  init: AdapterInit;
  /** Which engine ran the steps: the CUDA device engine, or the CPU's. */
  engine: TrainEngineKind;
  /** The precision the steps' GEMMs ran in (bf16 only on the device engine with cuBLAS and a bf16 checkpoint). */
  precision: ComputePrecision;
}

/**
 * The CUDA device engine when the backend is CUDA and it supports this adapter; else the
 * CPU engine, with one `train_engine` line saying why. Evaluation and generation stay on
 * the CPU engine either way (the adapter is copied back for them).
 */
async function chooseEngine(
  model: TrainModel,
  ctx: RunContext,
  requested: ComputePrecision,
): Promise<{ engine: TrainEngineKind; precision: ComputePrecision }> {
  const info = backendInfo();
  const choice: DeviceChoice =
    info.backend === 'cuda'
      ? await model.useDevice(requested)
      : { engine: 'cpu', reason: `the backend is the CPU (${info.reason ?? `LOWRANK_BACKEND=${info.requested}`})` };
  if (choice.engine === 'cuda') {
    const why =
      choice.precision === requested
        ? {}
        : { precisionReason: `bf16 matmul needs cuBLAS and a bf16 checkpoint (GEMMs: ${info.gemm ?? 'unknown'})` };
    ctx.reporter.log.info(
      { event: 'train_engine', engine: 'cuda', precision: choice.precision, requestedPrecision: requested, ...why },
      `training on the CUDA device engine (${choice.precision})`,
    );
    return { engine: 'cuda', precision: choice.precision };
  }
  // The CPU engine computes in f32 (bf16 weights are widened in its GEMMs).
  ctx.reporter.log.info(
    { event: 'train_engine', engine: 'cpu', precision: 'f32', requestedPrecision: requested, reason: choice.reason },
    `training on the CPU engine (f32): ${choice.reason}`,
  );
  return { engine: 'cpu', precision: 'f32' };
}

export async function runTrain(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const { method, dataset } = checkSpec(spec);
  // Trans-LoRA stage 0 needs the seed key and prompt-completion data: refused before training, not after.
  const transferable = spec.training?.transferable === true;
  if (transferable) seedKey();
  const run = await trainAdapter(spec, ctx, method, dataset, transferable ? (data) => checkTransferableData(data) : undefined);
  const outcome = trainOutcome(spec, run, join(ctx.workDir, 'output', 'adapter'));
  if (transferable) {
    const stage0 = await runStage0(run, spec, ctx, outcome.dir);
    outcome.methodMetadata.transfer = stage0;
  }
  return outcome;
}

/** Runs of the same job (same inputs and settings) share checkpoints; another job's are ignored. */
function fingerprint(spec: Spec, datasetDigest: string): string {
  const { method, optimizer, schedule, training, seed, baseModel } = spec;
  const data = { ...spec.dataset, path: undefined, uri: undefined };
  return createHash('sha256')
    .update(JSON.stringify({ method, optimizer, schedule, training, seed, base: baseModel, data, datasetDigest }))
    .digest('hex')
    .slice(0, 16);
}

const stepDir = (step: number) => `step-${String(step).padStart(8, '0')}`;

function latestCheckpoint(root: string): string | undefined {
  if (!existsSync(root)) return undefined;
  const steps = readdirSync(root)
    .filter((d) => /^step-\d+$/.test(d) && existsSync(join(root, d, 'checkpoint.json')))
    .sort();
  return steps.length ? join(root, steps.at(-1) as string) : undefined;
}

/**
 * Trains `method` on `dataset` over spec.baseModel with the spec's optimizer, schedule and
 * loop (mode train, and the distillation of mode transfer). `onData` may refuse the data
 * before any step is taken.
 */
export async function trainAdapter(
  spec: Spec,
  ctx: RunContext,
  method: Method,
  dataset: DatasetSpec,
  onData?: (data: PreparedDataset) => void,
): Promise<TrainedRun> {
  const opt = {
    lr: 2e-4,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: 0,
    maxGradNorm: 1,
    ...spec.optimizer,
  };
  const schedule = { type: 'linear' as const, minLrRatio: 0, ...spec.schedule };
  const training = {
    epochs: 1,
    microBatchSize: 4,
    gradientAccumulation: 1,
    evalEvery: 0,
    checkpointEvery: 0,
    logEvery: 10,
    precision: 'bf16' as ComputePrecision, // the CRD's default
    ...spec.training,
  };

  await ctx.reporter.progress({ stage: 'loading base model' }, true);
  const base = await resolveBase(spec.baseModel, ctx.client, ctx.workDir);
  const tok = TextTokenizer.load(base.dir);
  let model: TrainModel;
  try {
    model = await TrainModel.load(base.dir);
  } catch (err) {
    if (err instanceof LowrankError)
      throw new LowrankError(err.code === 'not_found' ? 'invalid_file' : err.code, `spec.baseModel: ${err.message}`);
    throw err;
  }
  if (tok.vocabSize > model.config.vocabSize)
    throw new LowrankError(
      'invalid_file',
      `spec.baseModel: tokenizer.json has ${tok.vocabSize} tokens but the model's vocab_size is ${model.config.vocabSize}`,
    );
  if (dataset.maxSeqLength > model.config.maxPositionEmbeddings)
    refuse(
      'spec.dataset.maxSeqLength',
      `${dataset.maxSeqLength} exceeds the model's max_position_embeddings (${model.config.maxPositionEmbeddings})`,
    );

  await ctx.reporter.progress({ stage: 'reading dataset' }, true);
  const datasetPath = dataset.path ?? (await fetchDataset(dataset.uri as string, ctx.workDir, ctx.reporter.log));
  const data = await prepareDataset(datasetPath, tok, {
    format: dataset.format,
    evalFraction: dataset.evalFraction,
    maxSeqLength: dataset.maxSeqLength,
    maxSamples: dataset.maxSamples,
    chatTemplate: dataset.chatTemplate,
    seed: spec.seed,
    split: dataset.split,
  });
  onData?.(data);
  const mb = training.microBatchSize;
  const accum = training.gradientAccumulation;
  const trainRows = toRows(data.train, dataset.packing, dataset.maxSeqLength);
  const evalBatches = chunk(toRows(data.eval, dataset.packing, dataset.maxSeqLength), mb).map((rows) => toBatch(rows, tok.padId));
  const microPerEpoch = Math.ceil(trainRows.length / mb);
  const stepsPerEpoch = Math.max(1, Math.floor(microPerEpoch / accum));
  const total = training.maxSteps ?? Math.max(1, Math.round(training.epochs * stepsPerEpoch));
  const orders = new Map<number, number[]>();
  /** The idx-th micro-batch of the run: epoch-wise Philox permutations of the rows. */
  const microBatch = (idx: number): TokenBatch => {
    const epoch = Math.floor(idx / microPerEpoch);
    let order = orders.get(epoch);
    if (!order) {
      order = permutation(trainRows.length, spec.seed, `train:epoch:${epoch}`);
      orders.clear();
      orders.set(epoch, order);
    }
    const k = idx % microPerEpoch;
    return toBatch(
      order.slice(k * mb, (k + 1) * mb).map((i) => trainRows[i] as Row),
      tok.padId,
    );
  };

  const targets: Projection[] = method.targetModules.includes('all-linear')
    ? [...PROJECTIONS]
    : (method.targetModules.filter((t) => t !== 'all-linear') as Projection[]);
  const alpha = method.alpha ?? method.rank;
  const useRslora = method.useRslora ?? (method.type === 'rslora' || method.rank >= 64);
  const warmupSteps = schedule.warmupSteps ?? Math.ceil((schedule.warmupRatio ?? 0) * total);
  // LoRA-SB's init is not the identity: the before of before/after is measured on the bare base.
  const bareEval = method.type === 'lora-sb' && evalBatches.length ? (await model.evaluate(evalBatches)).loss : undefined;
  const initOrders = new Map<string, number[]>();
  // Sets the adapter (and, for PiSSA, the residual base) on the model; says how to export it.
  const init = await initAdapter({
    model,
    method,
    targets,
    alpha,
    useRslora,
    seed: spec.seed,
    rows: trainRows.length,
    firstWarmupLr: warmupSteps > 0 ? opt.lr / warmupSteps : 0,
    calibration: (purpose, idx, size) => {
      const order = initOrders.get(purpose) ?? permutation(trainRows.length, spec.seed, `init:${purpose}`);
      initOrders.set(purpose, order);
      const rows = Array.from(
        { length: Math.min(size, order.length) },
        (_, j) => trainRows[order[(idx * size + j) % order.length] as number] as Row,
      );
      const b = toBatch(rows, tok.padId);
      const attention = new Uint8Array(b.rows * b.seq);
      for (const [i, r] of rows.entries()) attention.fill(1, i * b.seq, i * b.seq + r.ids.length);
      return { ...b, attention };
    },
  });
  if (method.dropout > 0) model.setDropout(method.dropout, spec.seed); // DoRA too: PEFT's dropout path
  // One layer of activations kept at a time: less memory, about a third more compute.
  if (spec.training?.recompute) model.setRecompute(true);

  const optimizer: OptimizerOptions = {
    lr: opt.lr,
    beta1: opt.betas[0] as number,
    beta2: opt.betas[1] as number,
    eps: opt.eps,
    weightDecay: opt.weightDecay,
    maxGradNorm: opt.maxGradNorm,
    schedule: schedule.type,
    warmupSteps,
    totalSteps: total,
  };

  // Resume from the newest complete checkpoint of this same job.
  const ckptRoot = join(ctx.workDir, 'checkpoints');
  const print = fingerprint(spec, data.digest);
  let curve: CurvePoint[] = [];
  let resumedFrom: number | undefined;
  const resume = spec.retry?.resumeFromCheckpoint !== false;
  let latest = resume ? latestCheckpoint(ckptRoot) : undefined;
  // A retry on another machine starts with an empty work dir: the registry has the job's checkpoints.
  if (!latest && resume && ctx.client && ctx.jobId) {
    const remote = await pullLatestCheckpoint(ctx.client, ctx.jobId, ckptRoot, stepDir);
    if (remote) {
      latest = remote.dir;
      ctx.reporter.log.info(
        { event: 'checkpoint-downloaded', step: remote.step },
        `downloaded the job's checkpoint of step ${remote.step}`,
      );
    }
  }
  if (latest) {
    const { state, meta } = loadCheckpoint(latest);
    if (meta.fingerprint === print) {
      model.restore(state);
      curve = (meta.lossCurve as CurvePoint[]) ?? [];
      resumedFrom = state.step;
      ctx.reporter.log.info({ event: 'resumed', step: state.step, checkpoint: latest }, `resuming from step ${state.step}`);
    } else {
      ctx.reporter.log.warn(
        { event: 'checkpoint-ignored', checkpoint: latest },
        'a checkpoint of other settings is in the work dir; starting afresh',
      );
      rmSync(ckptRoot, { recursive: true, force: true });
    }
  }
  const checkpoint = async (step: number) => {
    const dir = join(ckptRoot, stepDir(step));
    saveCheckpoint(dir, model.state(), { fingerprint: print, lossCurve: curve, datasetDigest: data.digest });
    if (ctx.client && ctx.jobId) {
      try {
        await pushCheckpoint(ctx.client, ctx.jobId, dir, step, { fingerprint: print, datasetDigest: data.digest });
      } catch (err) {
        // The job was ended (cancelled): stop. Otherwise the local copy still serves a retry here.
        if (err instanceof LowrankError && err.code === 'conflict') throw err;
        ctx.reporter.log.warn({ event: 'checkpoint-upload-failed', step, err: (err as Error).message }, 'checkpoint kept locally only');
      }
    }
    // Older ones go only once the new one is complete.
    for (const d of readdirSync(ckptRoot)) if (join(ckptRoot, d) !== dir) rmSync(join(ckptRoot, d), { recursive: true, force: true });
    await ctx.reporter.progress({ stage: 'checkpointed', step, total, checkpoint: dir }, true);
  };
  const evaluate = async () => (evalBatches.length ? model.evaluate(evalBatches) : undefined);

  // Eval at step 0; every init but LoRA-SB keeps the base function, so this is the base's too.
  let baseEval: number | undefined;
  if (resumedFrom === undefined) {
    const initEval = (await evaluate())?.loss;
    if (initEval !== undefined) curve.push({ step: 0, loss: initEval, evalLoss: initEval });
    baseEval = bareEval ?? initEval;
  } else baseEval = bareEval ?? curve.find((p) => p.step === 0)?.evalLoss;
  const { engine, precision } = await chooseEngine(model, ctx, training.precision);
  let step = resumedFrom ?? 0;
  const loopStart = { step, at: performance.now() };
  let windowTokens = 0;
  let windowStart = performance.now();
  let lastLoss = Number.NaN;
  while (step < total) {
    const micro = Array.from({ length: accum }, (_, j) => microBatch(step * accum + j));
    const r = await model.trainStep(micro, optimizer);
    step = r.step;
    lastLoss = r.loss;
    windowTokens += r.tokens;
    const evalNow = training.evalEvery > 0 && step % training.evalEvery === 0 && step < total;
    const logNow = step % training.logEvery === 0 || step === total || step === 1;
    if (logNow || evalNow) {
      const point: CurvePoint = { step, loss: r.loss };
      if (evalNow) {
        const e = await evaluate();
        if (e) point.evalLoss = e.loss;
      }
      curve.push(point);
      const seconds = (performance.now() - windowStart) / 1000;
      await ctx.reporter.progress({
        stage: 'training',
        step,
        total,
        loss: r.loss,
        lr: r.lr,
        gradNorm: r.gradNorm,
        tokensPerSecond: Math.round(windowTokens / Math.max(seconds, 1e-6)),
        // From this process's own rate: a resumed run's earlier steps took no time here.
        etaSeconds: Math.round((((performance.now() - loopStart.at) / 1000) * (total - step)) / Math.max(1, step - loopStart.step)),
        ...(point.evalLoss === undefined ? {} : { evalLoss: point.evalLoss, evalPerplexity: Math.exp(point.evalLoss) }),
      });
      windowTokens = 0;
      windowStart = performance.now();
    }
    if (training.checkpointEvery > 0 && step % training.checkpointEvery === 0 && step < total) await checkpoint(step);
  }
  await ctx.reporter.progress({ stage: 'evaluating', step, total }, true);
  const final = await evaluate();
  const last = curve.at(-1);
  if (final && last && last.step === step) last.evalLoss = final.loss;
  else if (final) curve.push({ step, loss: lastLoss, evalLoss: final.loss });
  return {
    base,
    tok,
    model,
    data,
    method,
    dataset,
    alpha,
    useRslora,
    targets,
    total,
    mb,
    accum,
    opt,
    schedule: { ...schedule, warmupSteps },
    curve,
    lastLoss,
    final,
    baseEval,
    resumedFrom,
    init,
    engine,
    precision,
  };
}

/** Writes the run's adapter as a PEFT directory at `dir` and describes it (metadata, metrics, lineage). */
export function trainOutcome(spec: Spec, run: TrainedRun, dir: string): JobOutcome {
  const { base, model, method, dataset, data, alpha, useRslora, targets, total, mb, accum, opt, curve, final, baseEval, lastLoss } = run;
  const { resumedFrom, schedule, init } = run;
  rmSync(dir, { recursive: true, force: true });
  const exported = init.exportAdapter(model.adapter());
  writeTrainedAdapter(dir, exported.modules, model.magnitudes(), {
    baseModel: base.name,
    rank: exported.rank,
    alpha: exported.alpha,
    useRslora: exported.useRslora ?? useRslora,
    dropout: method.dropout,
    targets: exported.targets ?? targets,
    rankPattern: exported.rankPattern,
    alphaPattern: exported.alphaPattern,
    layers: method.layersToTransform,
    init: method.init,
  });
  const methodMetadata = {
    kind: 'training',
    method: method.type,
    rank: method.rank,
    alpha,
    useRslora,
    dropout: method.dropout,
    init: method.init,
    initRecipe: init.recipe,
    ...(exported.rank === method.rank ? {} : { exportedRank: exported.rank, exportedAlpha: exported.alpha }),
    targets,
    datasetDigest: data.digest,
    datasetFormat: data.format,
    records: data.records,
    trainRecords: data.train.length,
    evalRecords: data.eval.length,
    packing: dataset.packing,
    maxSeqLength: dataset.maxSeqLength,
    steps: total,
    microBatchSize: mb,
    gradientAccumulation: accum,
    optimizer: { type: 'adamw', ...opt },
    schedule,
    computePrecision: run.precision,
    engine: run.engine,
    seed: spec.seed,
    lossCurve: curve,
    ...(resumedFrom === undefined ? {} : { resumedFromStep: resumedFrom }),
  };
  const metrics = {
    trainLoss: lastLoss,
    ...(final ? { evalLoss: final.loss, evalPerplexity: final.perplexity, evalTokens: final.tokens } : {}),
    ...(baseEval === undefined ? {} : { baseEvalLoss: baseEval, baseEvalPerplexity: Math.exp(baseEval) }),
    trainTokensPerEpoch: data.trainTokens,
    lossCurve: curve,
  };
  return {
    dir,
    baseModel: base.name,
    method: method.type,
    methodMetadata,
    metrics,
    lineage: [{ relation: 'trained_from', ...base.lineage, parameters: { method: method.type, rank: method.rank } }],
  };
}
