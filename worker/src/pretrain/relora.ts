/**
 * Pretraining a small base with the adapter engine, ReLoRA-style (Lialin et al. 2023):
 * the engine trains adapters on a frozen base, so each round trains a high-rank LoRA on
 * every projection over a text corpus, merges it into the weights (W ← W + s·B·A) and
 * starts the next round from the merged model with a fresh adapter and optimizer. The
 * sum of the rounds' updates is of high rank. Embeddings, norms and the head stay at
 * their init. Used by the demo to make a base that has learned something.
 */
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { chunk, toBatch, toRows } from '../data/batches.ts';
import { type Example, permutation } from '../data/dataset.ts';
import { initLora, PROJECTIONS, type TokenBatch, TrainModel } from '../native/train.ts';
import { mergeIntoBase } from '../peft/merge-into-base.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';

export interface ReloraOptions {
  rounds: number;
  stepsPerRound: number;
  rank: number;
  lr: number;
  batchRows: number;
  seqLength: number;
  seed: number;
  onRound?: (round: number, loss: number, evalLoss: number) => void;
}

/** Text lines as packed training rows (each line + eos, all tokens labelled). */
export function textExamples(lines: string[], tok: TextTokenizer): Example[] {
  const eos = tok.eosId === undefined ? [] : [tok.eosId];
  return lines.map((text, i) => {
    const ids = [...tok.encode(text), ...eos];
    return { ids, labels: [...ids], where: `line ${i + 1}` };
  });
}

/** Pretrains the model in `dir` in place; returns the eval loss before and after. */
export async function pretrainRelora(
  dir: string,
  tok: TextTokenizer,
  train: Example[],
  evalSet: Example[],
  o: ReloraOptions,
): Promise<{ before: number; after: number; steps: number }> {
  const rows = toRows(train, true, o.seqLength);
  const evalBatches = chunk(toRows(evalSet, true, o.seqLength), o.batchRows).map((r) => toBatch(r, tok.padId));
  const perEpoch = Math.max(1, Math.floor(rows.length / o.batchRows));
  let model = await TrainModel.load(dir);
  const before = (await model.evaluate(evalBatches)).loss;
  let after = before;
  let global = 0;
  for (let round = 0; round < o.rounds; round++) {
    const modules = initLora(model.config, { r: o.rank, alpha: o.rank, targets: [...PROJECTIONS], seed: o.seed * 1000 + round });
    model.setAdapter(modules);
    let loss = Number.NaN;
    for (let s = 0; s < o.stepsPerRound; s++, global++) {
      const epoch = Math.floor(global / perEpoch);
      const order = permutation(rows.length, o.seed, `relora:epoch:${epoch}`);
      const k = global % perEpoch;
      const batch: TokenBatch = toBatch(
        order.slice(k * o.batchRows, (k + 1) * o.batchRows).map((i) => rows[i] as (typeof rows)[number]),
        tok.padId,
      );
      // Each round warms up briefly and decays (ReLoRA's jagged schedule).
      const r = await model.trainStep([batch], {
        lr: o.lr,
        maxGradNorm: 1,
        schedule: 'cosine',
        warmupSteps: Math.min(10, Math.floor(o.stepsPerRound / 10)),
        totalSteps: o.stepsPerRound,
      });
      loss = r.loss;
    }
    const next = `${dir}.round`;
    rmSync(next, { recursive: true, force: true });
    mkdirSync(next, { recursive: true });
    mergeIntoBase(dir, model.adapter(), next);
    rmSync(dir, { recursive: true, force: true });
    renameSync(next, dir);
    model = await TrainModel.load(dir);
    after = (await model.evaluate(evalBatches)).loss;
    o.onRound?.(round, loss, after);
  }
  return { before, after, steps: global };
}
