/**
 * Task loss of adapters on a small dataset: the mean per-token cross-entropy of the
 * completions (as mode train's eval loss) on the base with each adapter, or with none.
 * Mode generate ranks its samples with it and records the base's loss beside the chosen one.
 */
import { chunk, toBatch, toRows } from '../data/batches.ts';
import { prepareDataset } from '../data/dataset.ts';
import { TrainModel } from '../native/train.ts';
import { readPeftAdapter } from '../peft/adapter-dir.ts';
import { TextTokenizer } from '../tokenizer/tokenizer.ts';

export interface ScoreDataset {
  path: string;
  format: 'auto' | 'text' | 'prompt-completion' | 'chat';
  maxSeqLength: number;
  maxSamples?: number | undefined;
  chatTemplate?: string | undefined;
}

export interface Scorer {
  /** Loss with the PEFT adapter in dir, or with no adapter. */
  loss(adapterDir: string | undefined): Promise<number>;
  digest: string;
  records: number;
}

export async function taskScorer(baseDir: string, data: ScoreDataset, seed: number): Promise<Scorer> {
  const tok = TextTokenizer.load(baseDir);
  const model = await TrainModel.load(baseDir);
  const maxSeq = Math.min(data.maxSeqLength, model.config.maxPositionEmbeddings);
  const prepared = await prepareDataset(data.path, tok, {
    format: data.format,
    evalFraction: 0,
    maxSeqLength: maxSeq,
    maxSamples: data.maxSamples,
    chatTemplate: data.chatTemplate,
    seed,
  });
  const batches = chunk(toRows(prepared.train, false, maxSeq), 8).map((rows) => toBatch(rows, tok.padId));
  return {
    digest: prepared.digest,
    records: prepared.records,
    async loss(dir) {
      model.setAdapter(dir ? readPeftAdapter(dir).modules : {});
      return (await model.evaluate(batches)).loss;
    },
  };
}
