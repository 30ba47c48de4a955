/**
 * A small fixed-step training loop over prompt/target examples, for the discriminator
 * (stage 0): AdamW with linear warmup and cosine decay, micro-batches drawn by epoch-wise
 * Philox permutations, as the train job does. The task adapter and the distilled student
 * go through the train job's own loop (run/train-job.ts).
 */
import { chunk, toBatch, toRows } from '../data/batches.ts';
import { type Example, permutation } from '../data/dataset.ts';
import type { TrainModel } from '../native/train.ts';

export interface FitOptions {
  steps: number;
  lr: number;
  batch: number;
  seed: number;
  padId: number;
  purpose: string;
}

export async function fitExamples(model: TrainModel, examples: Example[], o: FitOptions): Promise<{ losses: number[] }> {
  const rows = toRows(examples, false, Number.MAX_SAFE_INTEGER);
  const perEpoch = Math.max(1, Math.ceil(rows.length / o.batch));
  const losses: number[] = [];
  let order: number[] = [];
  for (let s = 0; s < o.steps; s++) {
    const epoch = Math.floor(s / perEpoch);
    if (s % perEpoch === 0) order = permutation(rows.length, o.seed, `${o.purpose}:epoch:${epoch}`);
    const k = s % perEpoch;
    const batch = toBatch(
      order.slice(k * o.batch, (k + 1) * o.batch).map((i) => rows[i] as (typeof rows)[number]),
      o.padId,
    );
    const r = await model.trainStep([batch], {
      lr: o.lr,
      maxGradNorm: 1,
      schedule: 'cosine',
      warmupSteps: Math.min(10, Math.floor(o.steps / 10)),
      totalSteps: o.steps,
    });
    losses.push(r.loss);
  }
  return { losses };
}

/** The examples as right-padded batches (for logits at each row's last token). */
export function batchesOf(examples: Example[], batch: number, padId: number) {
  return chunk(toRows(examples, false, Number.MAX_SAFE_INTEGER), batch).map((rows) => ({
    batch: toBatch(rows, padId),
    lengths: rows.map((r) => r.ids.length),
  }));
}
