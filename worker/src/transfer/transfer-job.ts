/**
 * AdapterJob mode transfer, Trans-LoRA stage 1 (METHODS §4.1): moves a source adapter
 * (trained with training.transferable, see stage0.ts) from its base to spec.baseModel
 * without the training data. Generate (few-shot from the decrypted seeds; target, source
 * or source+adapter), filter (the stage-0 discriminator, dedup, length), label (teacher =
 * source base + source adapter), distil (the train job's loop on the target base, over
 * the synthetic set), evaluate teacher, untrained target and student on real records
 * (spec.transfer.evalDataset, else the seeds, flagged weak). The version gets
 * transferred_from lineage to the source version and the transfer metadata.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { taskAccuracy } from '../eval/task-accuracy.ts';
import { TrainModel } from '../native/train.ts';
import { type ResolvedBase, resolveBase } from '../run/base-model.ts';
import { checkSpec, trainAdapter, trainOutcome } from '../run/train-job.ts';
import type { JobOutcome, RunContext } from '../run/types.ts';
import { TextTokenizer } from '../tokenizer/tokenizer.ts';
import { EmbeddingTable, medianBandwidth, mmd2 } from './mmd.ts';
import { readRecords, recordsOf } from './records.ts';
import { scoreOn } from './score.ts';
import { type SeedRecord, seedKey } from './seed-crypto.ts';
import { loadSource, type TransferSource } from './source.ts';
import { type Party, synthesize } from './synthesize.ts';

type Spec = AdapterJobSpecDefaulted;

/** Synthetic records held out of distillation: the student's eval loss and its agreement with the teacher. */
const DISTIL_HOLDOUT = 0.1;
type Transfer = NonNullable<Spec['transfer']>;

function refuse(field: string, what: string): never {
  throw new LowrankError('invalid_spec', `${field}: ${what}`);
}

/** What the schema cannot check: what this worker implements. */
function checkTransferSpec(spec: Spec): Transfer {
  if (spec.mode !== 'transfer') refuse('spec.mode', 'runTransfer runs mode transfer');
  const t = spec.transfer ?? refuse('spec.transfer', 'is required in mode transfer');
  if (t.sampling.topK > 0) refuse('spec.transfer.sampling.topK', 'the engine samples with temperature and top-p only; set 0');
  if (t.distillation.klWeight > 0)
    refuse(
      'spec.transfer.distillation.klWeight',
      'token-level KL distillation is not implemented yet; set 0 (sequence-level distillation on teacher completions)',
    );
  if (t.keep !== undefined && t.keep > t.candidates) refuse('spec.transfer.keep', `${t.keep} exceeds candidates (${t.candidates})`);
  const ev = t.evalDataset;
  if (ev) {
    if (!ev.path) {
      if (ev.uri?.startsWith('file://')) ev.path = new URL(ev.uri).pathname;
      else
        refuse(
          'spec.transfer.evalDataset',
          `give path (a local JSONL file or directory); ${ev.uri ?? 'the uri'} is not fetched by this worker`,
        );
    }
    if (ev.format !== 'auto' && ev.format !== 'prompt-completion')
      refuse('spec.transfer.evalDataset.format', `${ev.format}: scores need prompt-completion records ({prompt, completion})`);
  }
  return t;
}

async function loadModel(base: ResolvedBase, where: string): Promise<{ model: TrainModel; tok: TextTokenizer }> {
  try {
    return { model: await TrainModel.load(base.dir), tok: TextTokenizer.load(base.dir) };
  } catch (err) {
    if (err instanceof LowrankError)
      throw new LowrankError(err.code === 'not_found' ? 'invalid_file' : err.code, `${where}: ${err.message}`);
    throw err;
  }
}

/** The student: spec.method, else the source adapter's shape. */
function studentMethod(spec: Spec, src: TransferSource): NonNullable<Spec['method']> {
  if (spec.method) return spec.method;
  const c = src.adapter.adapter.config;
  const targets = Array.isArray(c.target_modules) ? c.target_modules : ['all-linear'];
  return {
    type: c.use_rslora ? 'rslora' : 'lora',
    rank: c.r,
    alpha: c.lora_alpha,
    targetModules: targets,
    dropout: 0,
    bias: 'none',
    init: 'kaiming-uniform',
  } as unknown as NonNullable<Spec['method']>;
}

export async function runTransfer(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const t = checkTransferSpec(spec);
  const key = seedKey();
  const stage = (s: string, extra: Record<string, unknown> = {}) => ctx.reporter.progress({ stage: `transfer: ${s}`, ...extra }, true);

  await stage('reading the source version');
  const src = await loadSource(t, key, ctx);
  const s0 = src.stage0;
  const srcName = src.adapter.parent ?? src.adapter.parentRef ?? src.adapter.dir;
  await stage('loading the source and target bases');
  const srcBase = await resolveBase(s0.sourceBase.spec, ctx.client, join(ctx.workDir, 'source')).catch((err: unknown) => {
    if (err instanceof LowrankError) throw new LowrankError(err.code, `the source base recorded at stage 0 by ${srcName}: ${err.message}`);
    throw err;
  });
  const tgtBase = await resolveBase(spec.baseModel, ctx.client, ctx.workDir);
  const source = await loadModel(srcBase, 'the source base');
  // The target model is loaded here only to generate; distillation loads its own.
  let target: { model: TrainModel; tok: TextTokenizer } | undefined = await loadModel(tgtBase, 'spec.baseModel');
  const targetTok = target.tok;
  const targetPositions = target.model.config.maxPositionEmbeddings;
  const method = studentMethod(spec, src);
  // Read now: a bad eval set fails the job before any generation.
  const weak = !t.evalDataset;
  const evalRecords = t.evalDataset ? readRecords(t.evalDataset.path as string, 'spec.transfer.evalDataset') : src.seeds;

  // The distillation spec is a train spec over the synthetic set; checked before any generation.
  const dataPath = join(ctx.workDir, 'synthetic', 'distil.jsonl');
  const maxSeqLength = Math.min(1024, targetPositions, source.model.config.maxPositionEmbeddings);
  const distilSpec = {
    ...spec,
    mode: 'train',
    transfer: undefined,
    method,
    dataset: { path: dataPath, format: 'prompt-completion', evalFraction: DISTIL_HOLDOUT, packing: false, maxSeqLength, split: 'train' },
    training: { ...spec.training, transferable: false },
  } as unknown as Spec;
  const checked = checkSpec(distilSpec);

  const completionTokens = s0.maxCompletionTokens + 2;
  const maxNewTokens = Math.min(t.sampling.maxNewTokens, Math.floor(maxSeqLength / 2));
  let gen: Party | undefined =
    t.generator === 'target'
      ? { ...target, adapter: {} }
      : { ...source, adapter: t.generator === 'source-adapter' ? src.adapter.adapter.modules : {} };
  const keep = t.keep ?? s0.trainRecords;
  await stage('generating and filtering', { step: 0, total: keep });
  const syn = await synthesize(
    gen,
    { ...source, adapter: src.discriminator.modules, labels: s0.discriminator.labels, maxLen: maxSeqLength },
    { ...source, adapter: src.adapter.adapter.modules },
    targetTok,
    src.seeds,
    {
      candidates: t.candidates,
      keep: Math.min(keep, t.candidates),
      k: t.seedsPerPrompt,
      seed: spec.seed,
      temperature: t.sampling.temperature,
      topP: t.sampling.topP,
      maxNewTokens,
      acceptThreshold: t.acceptThreshold,
      dedupJaccard: t.dedupJaccard,
      maxPromptTokens: maxSeqLength - completionTokens,
      completionTokens,
      teacherDecoding: t.distillation.teacherDecoding,
      onRound: (c) => stage('generating and filtering', { step: c.accepted, total: keep, generated: c.generated, accepted: c.accepted }),
    },
  );
  ctx.reporter.log.info(
    { event: 'synthesized', ...syn, records: syn.records.length },
    `kept ${syn.records.length} of ${syn.generated} candidates`,
  );
  if (syn.records.length === 0)
    throw new LowrankError(
      'invalid_request',
      `no synthetic sample survived (generated ${syn.generated}, over-length ${syn.overLength}, rejected by the discriminator ${syn.rejected}, duplicates ${syn.duplicatesExact + syn.duplicatesNear}, unfinished by the teacher ${syn.teacherUnfinished}): lower spec.transfer.acceptThreshold or raise candidates`,
    );
  // How close the accepted prompts are to the seeds, against the unfiltered candidates.
  const table = EmbeddingTable.load(srcBase.dir);
  const [seedsE, acceptedE, unfilteredE] = [src.seeds.map((s) => s.prompt), syn.acceptedTexts.slice(0, 512), syn.unfiltered].map((t) =>
    table.embed(source.tok, t),
  ) as [Float64Array[], Float64Array[], Float64Array[]];
  const bw = medianBandwidth([...seedsE, ...acceptedE, ...unfilteredE]);
  const mmd = { accepted: mmd2(seedsE, acceptedE, bw), unfiltered: mmd2(seedsE, unfilteredE, bw), unfilteredSample: unfilteredE.length };
  // Nothing holds the generation-time target model any more: it can go before distillation loads one.
  gen = undefined;
  target = undefined;
  mkdirSync(join(ctx.workDir, 'synthetic'), { recursive: true });
  writeFileSync(dataPath, `${syn.records.map((r) => JSON.stringify(r)).join('\n')}\n`);

  await stage('distilling');
  const run = await trainAdapter(distilSpec, { ...ctx, workDir: join(ctx.workDir, 'distil') }, checked.method, checked.dataset);
  const outcome = trainOutcome(distilSpec, run, join(ctx.workDir, 'output', 'adapter'));

  await stage('evaluating');
  // Room for the longest expected answer in each model's own tokens (+ eos and one spare).
  const room = (tok: TextTokenizer, rs: SeedRecord[]) => rs.reduce((m, r) => Math.max(m, tok.encode(r.completion, false).length), 0) + 2;
  source.model.setAdapter(src.adapter.adapter.modules);
  const teacher = await scoreOn(source.model, source.tok, evalRecords, room(source.tok, evalRecords));
  const student = await scoreOn(run.model, run.tok, evalRecords, room(run.tok, evalRecords));
  // Held-out synthetic prompts: does the student answer as the teacher did?
  const heldOut = recordsOf(run.data.eval);
  const agreement = heldOut.length
    ? (await taskAccuracy(run.model, run.tok, heldOut, { maxNewTokens: room(run.tok, heldOut) })).accuracy
    : undefined;
  // The untrained target: the distilled model with its adapter taken off (already written out).
  run.model.setAdapter({});
  const baseline = await scoreOn(run.model, run.tok, evalRecords, room(run.tok, evalRecords));
  ctx.reporter.log.info(
    { event: 'transfer-scores', teacher: teacher.accuracy, baseline: baseline.accuracy, student: student.accuracy, weak },
    `accuracy on ${evalRecords.length} real records${weak ? ' (the seeds only: weak)' : ''}: teacher ${teacher.accuracy}, untrained target ${baseline.accuracy}, student ${student.accuracy}`,
  );

  const md = outcome.methodMetadata;
  const methodMetadata = {
    ...md,
    kind: 'transfer',
    sourceAdapter: srcName,
    sourceBase: srcBase.name,
    targetBase: tgtBase.name,
    discriminator: { ref: src.discriminatorRef, stage0Accuracy: s0.discriminator.accuracy, labels: s0.discriminator.labels },
    discriminatorAccuracy: s0.discriminator.accuracy,
    seedCount: src.seeds.length,
    seedHashes: s0.seeds.hashes.slice(0, src.seeds.length),
    generator: t.generator,
    sampling: { ...t.sampling, maxNewTokens, seedsPerPrompt: t.seedsPerPrompt, seed: spec.seed },
    acceptThreshold: t.acceptThreshold,
    dedupJaccard: t.dedupJaccard,
    syntheticGenerated: syn.generated,
    syntheticAccepted: syn.accepted,
    syntheticKept: syn.records.length,
    acceptanceRate: syn.generated ? syn.accepted / syn.generated : 0,
    rejectedByDiscriminator: syn.rejected,
    duplicatesRemoved: syn.duplicatesExact + syn.duplicatesNear,
    duplicates: { exact: syn.duplicatesExact, near: syn.duplicatesNear },
    overLength: syn.overLength,
    empty: syn.empty,
    teacherUnfinished: syn.teacherUnfinished,
    meanPReal: { accepted: syn.meanPRealAccepted, all: syn.meanPRealAll },
    mmdToSeeds: {
      ...mmd,
      embedding: "mean of the source base's input embeddings over the prompt's tokens, L2-normalised",
      kernel: 'gaussian, bandwidth = median pairwise squared distance (pooled)',
    },
    teacherDecoding: t.distillation.teacherDecoding,
    evaluation: { set: weak ? 'seeds' : 'evalDataset', weak, records: evalRecords.length, metric: 'exact-match accuracy (greedy)' },
    teacherScore: teacher.accuracy,
    studentScore: student.accuracy,
    baselineScore: baseline.accuracy,
    lossless: student.accuracy >= teacher.accuracy,
    ...(agreement === undefined ? {} : { teacherStudentAgreement: agreement, agreementRecords: heldOut.length }),
    completionLoss: { teacher: teacher.completionLoss, baseline: baseline.completionLoss, student: student.completionLoss },
  };
  return {
    ...outcome,
    methodMetadata,
    metrics: {
      ...outcome.metrics,
      teacherScore: teacher.accuracy,
      studentScore: student.accuracy,
      baselineScore: baseline.accuracy,
      teacherCompletionLoss: teacher.completionLoss,
      baselineCompletionLoss: baseline.completionLoss,
      studentCompletionLoss: student.completionLoss,
      syntheticKept: syn.records.length,
    },
    lineage: [
      {
        relation: 'transferred_from',
        ...(src.adapter.parent ? { parent: src.adapter.parent } : { parentRef: src.adapter.parentRef as string }),
        parameters: { generator: t.generator, kept: syn.records.length },
      },
      ...outcome.lineage,
    ],
  };
}
