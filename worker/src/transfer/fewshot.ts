/**
 * Synthetic prompts few-shot from the seeds (METHODS §4.1, stage 0 step 3 and stage 1
 * step 1): each generation prompt lists k seed inputs drawn by Philox(seed, call), one
 * per line, and the model's next line is a candidate. Inputs only: the teacher writes the
 * answers. A candidate that does not end (newline or eos) within maxNewTokens is
 * over-length and dropped; an empty one is dropped too.
 */
import { permutation } from '../data/dataset.ts';
import type { TrainModel } from '../native/train.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';
import { continueTexts } from './text-gen.ts';

export const FEWSHOT_TEMPLATE = '{seed_1}\\n…{seed_k}\\n';

export interface CandidateOptions {
  count: number;
  k: number;
  seed: number;
  temperature: number;
  topP: number;
  maxNewTokens: number;
}

export interface Candidates {
  texts: string[];
  generated: number;
  overLength: number;
  empty: number;
}

/** The i-th generation prompt: k seeds (a seeded draw), shortened until it fits the context. */
export function fewShotPrompt(inputs: string[], k: number, seed: number, i: number, fits: (p: string) => boolean): string {
  const order = permutation(inputs.length, seed, `fewshot:${i}`).slice(0, Math.min(k, inputs.length));
  for (let m = order.length; m >= 1; m--) {
    const p = `${order
      .slice(0, m)
      .map((j) => (inputs[j] as string).replace(/\n/g, ' '))
      .join('\n')}\n`;
    if (fits(p)) return p;
  }
  return '\n';
}

export async function generateCandidates(
  model: TrainModel,
  tok: TextTokenizer,
  inputs: string[],
  o: CandidateOptions,
): Promise<Candidates> {
  const room = model.config.maxPositionEmbeddings - o.maxNewTokens;
  const fits = (p: string) => tok.encode(p).length <= room;
  const prompts = Array.from({ length: o.count }, (_, i) => fewShotPrompt(inputs, o.k, o.seed, i, fits));
  const outs = await continueTexts(model, tok, prompts, {
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    topP: o.topP,
    seed: o.seed,
    stop: '\n',
  });
  const texts: string[] = [];
  let overLength = 0;
  let empty = 0;
  for (const c of outs) {
    if (!c.ended) overLength++;
    else if (c.text.trim() === '') empty++;
    else texts.push(c.text.trim());
  }
  return { texts, generated: outs.length, overLength, empty };
}
