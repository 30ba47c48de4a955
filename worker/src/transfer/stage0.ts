/**
 * Trans-LoRA stage 0 (METHODS §4.1), run by a train job with training.transferable after
 * the task adapter is trained, while the data is still at hand. It adds to the version:
 *
 *   transfer/stage0.json        what stage 1 needs: the source base as the job named it,
 *                               label tokens, seed hashes, training-set size, lengths
 *   transfer/seeds.enc.json     seedSamples real records, AES-256-GCM (seed-crypto.ts)
 *   transfer/discriminator/     the discriminator, a PEFT LoRA on the source base
 *
 * so a transfer job that names the source version finds everything in it; the version's
 * public metadata (methodMetadata.transfer) repeats all of it but the seeds (hashes only).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import type { PreparedDataset } from '../data/dataset.ts';
import { permutation } from '../data/dataset.ts';
import { initLora, PROJECTIONS } from '../native/train.ts';
import type { TrainedRun } from '../run/train-job.ts';
import { writeTrainedAdapter } from '../run/trained-adapter.ts';
import type { RunContext } from '../run/types.ts';
import { DISCRIMINATOR_TEMPLATE, type LabelTokens, pickLabels, trainDiscriminator } from './discriminator.ts';
import { FEWSHOT_TEMPLATE, generateCandidates } from './fewshot.ts';
import { recordsOf } from './records.ts';
import { encryptSeeds, keyId, seedHash, seedKey } from './seed-crypto.ts';

export const STAGE0_FILE = 'transfer/stage0.json';
export const SEEDS_FILE = 'transfer/seeds.enc.json';
export const DISCRIMINATOR_DIR = 'transfer/discriminator';

/** Discriminator shape and training (ours; the paper fine-tunes a LoRA of the source model). */
const DISCRIMINATOR = { rank: 8, alpha: 16, lr: 5e-3, epochs: 6, maxSteps: 400, batch: 16 };
/** Negative samples generated at stage 0: as many as training records, within these bounds. */
const NEGATIVES = { min: 32, max: 512, temperature: 0.7, topP: 0.95 };

export interface Stage0File {
  format: 'lowrank-transfer-stage0-v1';
  sourceBase: {
    spec: NonNullable<AdapterJobSpecDefaulted['baseModel']>;
    name: string;
    lineage: { parent: string } | { parentRef: string };
  };
  trainRecords: number;
  seeds: { count: number; hashes: string[]; keyId: string; file: string };
  maxPromptTokens: number;
  maxCompletionTokens: number;
  discriminator: {
    dir: string;
    labels: LabelTokens;
    template: string;
    accuracy: number;
    heldOut: number;
    trainSize: number;
    steps: number;
    rank: number;
    negatives: { generated: number; kept: number; overLength: number; empty: number; temperature: number; topP: number };
    lr: number;
    finalLoss: number;
  };
  fewShot: { template: string; k: number };
}

/** Stage 0 works on prompt-completion records (the prompts are what gets generated). */
export function checkTransferableData(data: PreparedDataset): void {
  if (data.format !== 'prompt-completion')
    throw new LowrankError(
      'invalid_spec',
      `spec.training.transferable: Trans-LoRA needs a prompt-completion dataset ({prompt, completion} records); this one is ${data.format}`,
    );
}

export async function runStage0(
  run: TrainedRun,
  spec: AdapterJobSpecDefaulted,
  ctx: RunContext,
  outDir: string,
): Promise<Record<string, unknown>> {
  const key = seedKey();
  const { model, tok } = run;
  const seedCount = spec.training?.seedSamples ?? 5;
  const records = recordsOf(run.data.train);
  if (records.length < seedCount + 2)
    throw new LowrankError(
      'invalid_spec',
      `spec.training.seedSamples: ${seedCount} seeds need at least ${seedCount + 2} training records; there are ${records.length}`,
    );
  await ctx.reporter.progress({ stage: 'transfer stage 0: keeping seeds' }, true);
  const seeds = permutation(records.length, spec.seed, 'transfer:seeds')
    .slice(0, seedCount)
    .map((i) => records[i] as (typeof records)[number]);
  mkdirSync(join(outDir, 'transfer'), { recursive: true });
  writeFileSync(join(outDir, SEEDS_FILE), `${JSON.stringify(encryptSeeds(seeds, key))}\n`);
  const maxPromptTokens = records.reduce((m, r) => Math.max(m, tok.encode(r.prompt).length), 0);
  const maxCompletionTokens = records.reduce((m, r) => Math.max(m, tok.encode(r.completion, false).length), 0);

  // Negatives: prompts the source base (adapter off) writes few-shot from the seeds.
  await ctx.reporter.progress({ stage: 'transfer stage 0: generating negatives' }, true);
  model.setAdapter({});
  model.setDropout(0, spec.seed);
  const k = Math.min(3, seedCount);
  const maxLen = Math.min(run.dataset.maxSeqLength, model.config.maxPositionEmbeddings);
  const negatives = await generateCandidates(
    model,
    tok,
    seeds.map((s) => s.prompt),
    {
      count: Math.min(NEGATIVES.max, Math.max(NEGATIVES.min, records.length)),
      k,
      seed: spec.seed,
      temperature: NEGATIVES.temperature,
      topP: NEGATIVES.topP,
      maxNewTokens: Math.min(2 * maxPromptTokens + 4, Math.floor(model.config.maxPositionEmbeddings / 2)),
    },
  );

  await ctx.reporter.progress({ stage: 'transfer stage 0: training the discriminator' }, true);
  const labels = pickLabels(tok);
  const targets = [...PROJECTIONS];
  model.setAdapter(initLora(model.config, { r: DISCRIMINATOR.rank, alpha: DISCRIMINATOR.alpha, targets, seed: spec.seed + 1 }));
  const d = await trainDiscriminator(
    model,
    tok,
    labels,
    records.map((r) => r.prompt),
    negatives.texts,
    {
      seed: spec.seed,
      maxLen,
      lr: DISCRIMINATOR.lr,
      epochs: DISCRIMINATOR.epochs,
      maxSteps: DISCRIMINATOR.maxSteps,
      batch: DISCRIMINATOR.batch,
    },
  );
  writeTrainedAdapter(
    join(outDir, DISCRIMINATOR_DIR),
    model.adapter(),
    {},
    {
      baseModel: run.base.name,
      rank: DISCRIMINATOR.rank,
      alpha: DISCRIMINATOR.alpha,
      useRslora: false,
      dropout: 0,
      targets,
    },
  );
  ctx.reporter.log.info(
    { event: 'discriminator-trained', accuracy: d.accuracy, heldOut: d.heldOut, trainSize: d.trainSize, labels },
    `discriminator: held-out accuracy ${d.accuracy.toFixed(3)} on ${d.heldOut} samples`,
  );

  const hashes = seeds.map(seedHash);
  const file: Stage0File = {
    format: 'lowrank-transfer-stage0-v1',
    sourceBase: { spec: spec.baseModel as Stage0File['sourceBase']['spec'], name: run.base.name, lineage: run.base.lineage },
    trainRecords: records.length,
    seeds: { count: seeds.length, hashes, keyId: keyId(key), file: SEEDS_FILE },
    maxPromptTokens,
    maxCompletionTokens,
    discriminator: {
      dir: DISCRIMINATOR_DIR,
      labels,
      template: DISCRIMINATOR_TEMPLATE,
      accuracy: d.accuracy,
      heldOut: d.heldOut,
      trainSize: d.trainSize,
      steps: d.steps,
      rank: DISCRIMINATOR.rank,
      negatives: {
        generated: negatives.generated,
        kept: negatives.texts.length,
        overLength: negatives.overLength,
        empty: negatives.empty,
        temperature: NEGATIVES.temperature,
        topP: NEGATIVES.topP,
      },
      lr: DISCRIMINATOR.lr,
      finalLoss: d.finalLoss,
    },
    fewShot: { template: FEWSHOT_TEMPLATE, k },
  };
  writeFileSync(join(outDir, STAGE0_FILE), `${JSON.stringify(file, null, 2)}\n`);
  // Public: everything but the seeds themselves.
  const { format: _format, sourceBase: full, ...rest } = file;
  const { spec: _local, ...sourceBase } = full;
  return { stage: 0, ...rest, sourceBase };
}
