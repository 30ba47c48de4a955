/**
 * Scores of a model on real prompt-completion records: task accuracy (greedy completion
 * equals the expected one, eval/task-accuracy.ts) and the mean cross-entropy of the
 * expected completion (+ eos) given the prompt, a finer signal on small eval sets.
 */
import { chunk, toBatch, toRows } from '../data/batches.ts';
import { taskAccuracy } from '../eval/task-accuracy.ts';
import type { TrainModel } from '../native/train.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';
import type { SeedRecord } from './seed-crypto.ts';

export interface Score {
  accuracy: number;
  correct: number;
  total: number;
  completionLoss: number;
  samples: { prompt: string; expected: string; got: string }[];
}

export async function scoreOn(model: TrainModel, tok: TextTokenizer, records: SeedRecord[], maxNewTokens: number): Promise<Score> {
  const acc = await taskAccuracy(model, tok, records, { maxNewTokens });
  const eos = tok.eosId === undefined ? [] : [tok.eosId];
  const examples = records.map((r) => {
    const p = tok.encode(r.prompt);
    const c = [...tok.encode(r.completion, false), ...eos];
    return { ids: [...p, ...c], labels: [...p.map(() => -100), ...c], where: 'eval' };
  });
  const batches = chunk(toRows(examples, false, Number.MAX_SAFE_INTEGER), 32).map((rows) => toBatch(rows, tok.padId));
  const loss = (await model.evaluate(batches)).loss;
  return { accuracy: acc.accuracy, correct: acc.correct, total: acc.total, completionLoss: loss, samples: acc.samples };
}
