/**
 * The Trans-LoRA discriminator (METHODS §4.1, stage 0 step 4): a LoRA on the source base
 * trained to predict a label word after a sample, `real` for samples of the training set
 * and `synthetic` for prompts the base generated. The label words are single tokens of the
 * base's tokenizer, chosen from a fixed list of preferences (the words themselves when the
 * vocabulary has them, single letters otherwise) and recorded, so scoring at stage 1 reads
 * the same two logits: p_real = softmax(logit_real, logit_synthetic).
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { Example } from '../data/dataset.ts';
import { permutation } from '../data/dataset.ts';
import type { TrainModel } from '../native/train.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';
import { batchesOf, fitExamples } from './fit.ts';

export interface LabelTokens {
  real: { text: string; id: number };
  synthetic: { text: string; id: number };
}

/** What follows a sample before the label token. */
export const DISCRIMINATOR_TEMPLATE = '{sample}\nlabel:';

const PREFERENCES: [string, string][] = [
  [' real', ' synthetic'],
  ['real', 'synthetic'],
  [' true', ' fake'],
  [' yes', ' no'],
  [' R', ' S'],
  ['R', 'S'],
  ['1', '0'],
];

export function pickLabels(tok: TextTokenizer): LabelTokens {
  for (const [r, s] of PREFERENCES) {
    const a = tok.encode(r, false);
    const b = tok.encode(s, false);
    if (a.length === 1 && b.length === 1 && a[0] !== b[0] && a[0] !== tok.eosId && b[0] !== tok.eosId)
      return { real: { text: r, id: a[0] as number }, synthetic: { text: s, id: b[0] as number } };
  }
  throw new LowrankError(
    'invalid_file',
    `the tokenizer has none of the label token pairs ${PREFERENCES.map((p) => JSON.stringify(p)).join(', ')} as single tokens`,
  );
}

function promptIds(tok: TextTokenizer, sample: string, maxLen: number): number[] {
  const tail = tok.encode('\nlabel:', false);
  const ids = tok.encode(sample);
  // Over-long samples keep their start: the label must fit.
  return [...ids.slice(0, Math.max(1, maxLen - tail.length - 1)), ...tail];
}

export function discriminatorExample(tok: TextTokenizer, sample: string, label: number, maxLen: number): Example {
  const p = promptIds(tok, sample, maxLen);
  return { ids: [...p, label], labels: [...p.map(() => -100), label], where: 'discriminator' };
}

/** p(real) of each sample under the model's current adapter (the discriminator). */
export async function scoreReal(
  model: TrainModel,
  tok: TextTokenizer,
  labels: LabelTokens,
  samples: string[],
  maxLen: number,
): Promise<number[]> {
  const examples = samples.map((s) => {
    const ids = promptIds(tok, s, maxLen);
    return { ids, labels: ids.map(() => -100), where: 'score' };
  });
  const out: number[] = [];
  const vocab = model.config.vocabSize;
  for (const { batch, lengths } of batchesOf(examples, 32, tok.padId)) {
    const f = await model.forward(batch, { logits: true });
    const logits = f.logits as Float32Array;
    lengths.forEach((n, row) => {
      const at = (row * batch.seq + n - 1) * vocab;
      const d = (logits[at + labels.synthetic.id] as number) - (logits[at + labels.real.id] as number);
      out.push(1 / (1 + Math.exp(d)));
    });
  }
  return out;
}

export interface DiscriminatorResult {
  accuracy: number;
  heldOut: number;
  trainSize: number;
  steps: number;
  finalLoss: number;
}

/**
 * Trains the model's current (fresh) adapter as the discriminator on balanced real and
 * synthetic samples; a seeded fifth of each side is held out for the accuracy.
 */
export async function trainDiscriminator(
  model: TrainModel,
  tok: TextTokenizer,
  labels: LabelTokens,
  real: string[],
  synthetic: string[],
  o: { seed: number; maxLen: number; lr: number; epochs: number; maxSteps: number; batch: number },
): Promise<DiscriminatorResult> {
  const n = Math.min(real.length, synthetic.length);
  if (n < 2)
    throw new LowrankError(
      'invalid_request',
      `the discriminator needs at least 2 real and 2 synthetic samples; got ${real.length} and ${synthetic.length}`,
    );
  const pick = (xs: string[], side: string) =>
    permutation(xs.length, o.seed, `discriminator:${side}`)
      .slice(0, n)
      .map((i) => xs[i] as string);
  const [r, s] = [pick(real, 'real'), pick(synthetic, 'synthetic')];
  const held = Math.max(1, Math.round(n * 0.2));
  const train = [
    ...r.slice(held).map((x) => discriminatorExample(tok, x, labels.real.id, o.maxLen)),
    ...s.slice(held).map((x) => discriminatorExample(tok, x, labels.synthetic.id, o.maxLen)),
  ];
  const steps = Math.max(1, Math.min(o.maxSteps, Math.ceil((o.epochs * train.length) / o.batch)));
  const { losses } = await fitExamples(model, train, {
    steps,
    lr: o.lr,
    batch: o.batch,
    seed: o.seed,
    padId: tok.padId,
    purpose: 'discriminator',
  });
  const pr = await scoreReal(model, tok, labels, r.slice(0, held), o.maxLen);
  const ps = await scoreReal(model, tok, labels, s.slice(0, held), o.maxLen);
  const correct = pr.filter((p) => p >= 0.5).length + ps.filter((p) => p < 0.5).length;
  return { accuracy: correct / (2 * held), heldOut: 2 * held, trainSize: train.length, steps, finalLoss: losses.at(-1) as number };
}
