/**
 * Two small Llama bases for Trans-LoRA tests: a source (hidden 32, 2 layers, seed 3) and a
 * genuinely different target (hidden 48, 3 layers, seed 11), with different byte-level BPE
 * tokenizers (100 and 160 merges of the same corpus), both pretrained briefly (ReLoRA-style, worker/src/pretrain/relora.ts) so that
 * adapters learn, and the next-digit task as train / held-out eval JSONL.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { corpus, nextDigitTask, type TaskRecord } from '../../src/data/synthetic.ts';
import { writeTinyLlama } from '../../src/model/tiny-llama.ts';
import { pretrainRelora, textExamples } from '../../src/pretrain/relora.ts';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.ts';
import { trainByteLevelBpe, writeTokenizer } from '../../src/tokenizer/train-bpe.ts';

async function makeBase(
  dir: string,
  files: ReturnType<typeof trainByteLevelBpe>,
  docs: string[],
  shape: { hidden: number; layers: number; seed: number },
) {
  mkdirSync(dir, { recursive: true });
  writeTokenizer(dir, files);
  writeTinyLlama(dir, {
    vocabSize: files.vocabSize,
    hiddenSize: shape.hidden,
    intermediateSize: 2 * shape.hidden,
    layers: shape.layers,
    heads: 4,
    kvHeads: 2,
    maxPositions: 128,
    seed: shape.seed,
  });
  const t = TextTokenizer.load(dir);
  const ex = textExamples(docs, t);
  return pretrainRelora(dir, t, ex.slice(50), ex.slice(0, 50), {
    rounds: 3,
    stepsPerRound: 100,
    rank: 16,
    lr: 3e-3,
    batchRows: 8,
    seqLength: 128,
    seed: shape.seed,
  });
}

/**
 * The pretraining corpus: documents of four lines of one kind (sentences, counting runs,
 * digit lists, task prompts alone, task prompts with answers) joined by newlines, so the
 * bases know the task's format and continue a list of lines in kind (what few-shot
 * generation needs), not the adapter's mapping.
 */
function pretrainingDocs(): { docs: string[]; lines: string[] } {
  const lines = corpus(1500, 1);
  const task = nextDigitTask(300, 99);
  const kinds = new Map<string, string[]>();
  for (const l of lines) {
    const kind = l.startsWith('count:') ? 'count' : l.startsWith('digits:') ? 'digits' : 'sentence';
    kinds.set(kind, [...(kinds.get(kind) ?? []), l]);
  }
  kinds.set(
    'prompts',
    task.map((r) => r.prompt),
  );
  kinds.set(
    'answers',
    task.map((r) => r.prompt + r.completion),
  );
  const docs: string[] = [];
  for (const xs of kinds.values()) for (let i = 0; i + 4 <= xs.length; i += 4) docs.push(xs.slice(i, i + 4).join('\n'));
  return { docs, lines: [...lines, ...task.map((r) => r.prompt + r.completion)] };
}

export async function writeTransferBases(sourceDir: string, targetDir: string): Promise<void> {
  const { docs, lines } = pretrainingDocs();
  // Different tokenizers too (100 vs 160 merges): distillation is on text, so it crosses them.
  await makeBase(sourceDir, trainByteLevelBpe(lines, 100, 128), docs, { hidden: 32, layers: 2, seed: 3 });
  await makeBase(targetDir, trainByteLevelBpe(lines, 160, 128), docs, { hidden: 48, layers: 3, seed: 11 });
}

const writeJsonl = (path: string, records: TaskRecord[]) => writeFileSync(path, `${records.map((r) => JSON.stringify(r)).join('\n')}\n`);

/** 400 training records and 150 held-out ones none of which is in the training set. */
export function writeDigitData(trainPath: string, evalPath: string): void {
  const train = nextDigitTask(400, 5);
  const seen = new Set(train.map((r) => r.prompt));
  writeJsonl(trainPath, train);
  writeJsonl(
    evalPath,
    nextDigitTask(300, 1005)
      .filter((r) => !seen.has(r.prompt))
      .slice(0, 150),
  );
}
