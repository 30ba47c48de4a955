/**
 * A tiny Llama base for training tests: a byte-level BPE tokenizer.json learned from the
 * synthetic corpus and a seeded random model of that vocabulary, plus the next-digit
 * task as JSONL.
 */
import { writeFileSync } from 'node:fs';
import { corpus, nextDigitTask } from '../../src/data/synthetic.ts';
import { writeTinyLlama } from '../../src/model/tiny-llama.ts';
import { trainByteLevelBpe, writeTokenizer } from '../../src/tokenizer/train-bpe.ts';

export function writeTinyBase(dir: string, seed = 3): { vocabSize: number } {
  const task = nextDigitTask(300, 99).map((r) => r.prompt + r.completion);
  const files = trainByteLevelBpe([...corpus(1500, 1), ...task], 100);
  writeTokenizer(dir, files);
  writeTinyLlama(dir, {
    vocabSize: files.vocabSize,
    hiddenSize: 32,
    intermediateSize: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    maxPositions: 64,
    seed,
  });
  return { vocabSize: files.vocabSize };
}

export function writeTaskJsonl(path: string, n: number, seed: number): void {
  writeFileSync(
    path,
    `${nextDigitTask(n, seed)
      .map((r) => JSON.stringify(r))
      .join('\n')}\n`,
  );
}
