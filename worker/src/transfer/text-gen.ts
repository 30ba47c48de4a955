/**
 * Batched text continuation for the transfer pipeline: each prompt is left-padded into a
 * batch and continued by the model's current adapter (KV cache, greedy or seeded
 * temperature/top-p sampling), and the continuation is cut at the tokenizer's eos or at
 * `stop` (a newline for one-line prompts). `ended` says whether it was cut there; one that
 * ran out of tokens first is over-length.
 */
import type { Seed } from '../native/linalg.ts';
import type { TrainModel } from '../native/train.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';

export interface Continuation {
  text: string;
  ended: boolean;
}

export interface ContinueOptions {
  maxNewTokens: number;
  temperature?: number;
  topP?: number;
  /** Base seed; batch b samples with Philox(seed + b) so results do not depend on the batch that ran first. */
  seed?: number;
  stop?: string;
  batch?: number;
}

export async function continueTexts(model: TrainModel, tok: TextTokenizer, prompts: string[], o: ContinueOptions): Promise<Continuation[]> {
  const batch = o.batch ?? 32;
  const out: Continuation[] = [];
  for (let i = 0; i < prompts.length; i += batch) {
    const part = prompts.slice(i, i + batch).map((p) => tok.encode(p));
    const len = Math.max(...part.map((p) => p.length));
    const flat = new Int32Array(part.length * len).fill(tok.padId);
    const leftPad = part.map((p, k) => {
      flat.set(p, k * len + len - p.length);
      return len - p.length;
    });
    const sampled = (o.temperature ?? 0) > 0;
    const seed: Seed | undefined = sampled ? BigInt(o.seed ?? 0) * 1_000_003n + BigInt(i / batch) : undefined;
    const ids = await model.generate(
      { prompt: flat, rows: part.length, maxNewTokens: o.maxNewTokens, leftPad },
      {
        ...(sampled ? { temperature: o.temperature as number, topP: o.topP ?? 1, seed: seed as Seed } : {}),
        ...(tok.eosId === undefined ? {} : { eos: tok.eosId }),
      },
    );
    for (let k = 0; k < part.length; k++) {
      const row = Array.from(ids.subarray(k * o.maxNewTokens, (k + 1) * o.maxNewTokens));
      const eos = tok.eosId === undefined ? -1 : row.indexOf(tok.eosId);
      let text = tok.decode(eos >= 0 ? row.slice(0, eos) : row);
      let ended = eos >= 0;
      const cut = o.stop === undefined ? -1 : text.indexOf(o.stop);
      if (cut >= 0) {
        text = text.slice(0, cut);
        ended = true;
      }
      out.push({ text, ended });
    }
  }
  return out;
}
