/**
 * Task accuracy by greedy generation: each prompt is continued (KV cache, the model's
 * current adapter) and the decoded text (trimmed) must be the expected completion, alone
 * or followed by whitespace. Prompts are batched, left-padded to the longest of their batch.
 */
import type { TrainModel } from '../native/train.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';

export interface TaskResult {
  accuracy: number;
  correct: number;
  total: number;
  samples: { prompt: string; expected: string; got: string }[];
}

export async function taskAccuracy(
  model: TrainModel,
  tok: TextTokenizer,
  records: { prompt: string; completion: string }[],
  o: { maxNewTokens: number; batch?: number },
): Promise<TaskResult> {
  const batch = o.batch ?? 32;
  let correct = 0;
  const samples: TaskResult['samples'] = [];
  for (let i = 0; i < records.length; i += batch) {
    const part = records.slice(i, i + batch);
    const prompts = part.map((r) => tok.encode(r.prompt));
    const len = Math.max(...prompts.map((p) => p.length));
    const flat = new Int32Array(part.length * len).fill(tok.padId);
    const leftPad = prompts.map((p, k) => {
      flat.set(p, k * len + len - p.length);
      return len - p.length;
    });
    const out = await model.generate(
      { prompt: flat, rows: part.length, maxNewTokens: o.maxNewTokens, leftPad },
      { ...(tok.eosId === undefined ? {} : { eos: tok.eosId }) },
    );
    part.forEach((r, k) => {
      const ids = Array.from(out.subarray(k * o.maxNewTokens, (k + 1) * o.maxNewTokens));
      const end = tok.eosId === undefined ? -1 : ids.indexOf(tok.eosId);
      const got = tok.decode(end >= 0 ? ids.slice(0, end) : ids);
      const [g, e] = [got.trim(), r.completion.trim()];
      // Exactly the answer, or the answer followed by more text after a space.
      const ok = g === e || (g.startsWith(e) && /\s/.test(g[e.length] ?? ''));
      if (ok) correct++;
      if (samples.length < 3) samples.push({ prompt: r.prompt, expected: r.completion.trim(), got: got.trim() });
    });
  }
  return { accuracy: correct / records.length, correct, total: records.length, samples };
}
