/**
 * Training data from JSONL, Parquet or Arrow (records.ts reads them): records as `text` ({text}), `prompt-completion`
 * ({prompt, completion}: loss on the completion only, prompt labels -100) or `chat`
 * ({messages: [{role, content}]}: rendered by the chat template, loss on assistant turns
 * only). Every error names the file and line (or row). Records are tokenized, truncated to
 * maxSeqLength, shuffled by the job seed (Philox), cut to maxSamples and split into
 * train and eval; the sha256 of the bytes read is the dataset's digest.
 */
import { createHash } from 'node:crypto';
import { LowrankError } from '@lowrank/crds/errors';
import { philox, type Seed, streamId } from '../native/linalg.ts';
import type { ChatMessage, TextTokenizer } from '../tokenizer/tokenizer.ts';
import { datasetFiles, readRecords } from './records.ts';

export type RecordFormat = 'text' | 'prompt-completion' | 'chat';

/** One tokenized record; labels are the ids (unshifted) or -100 where no loss is taken. */
export interface Example {
  ids: number[];
  labels: number[];
  /** file:line of the record, for messages. */
  where: string;
}

export interface DatasetOptions {
  format: 'auto' | RecordFormat;
  evalFraction: number;
  maxSeqLength: number;
  maxSamples?: number | undefined;
  chatTemplate?: string | undefined;
  seed: Seed;
  /** The split to read from a directory that holds several (default train). */
  split?: string | undefined;
}

export interface PreparedDataset {
  train: Example[];
  eval: Example[];
  format: RecordFormat;
  /** sha256:<hex> of the files' bytes (in the order read). */
  digest: string;
  records: number;
  truncated: number;
  trainTokens: number;
}

const ROLES = new Set(['system', 'user', 'assistant', 'tool']);

function bad(where: string, what: string): never {
  throw new LowrankError('invalid_file', `${where}: ${what}`);
}

function detect(rec: Record<string, unknown>, where: string): RecordFormat {
  if ('messages' in rec) return 'chat';
  if ('prompt' in rec || 'completion' in rec) return 'prompt-completion';
  if ('text' in rec) return 'text';
  bad(
    where,
    `cannot tell the record format from its fields (${Object.keys(rec).join(', ') || 'none'}): give text, prompt + completion, or messages`,
  );
}

function str(rec: Record<string, unknown>, key: string, where: string): string {
  const v = rec[key];
  if (v === undefined) bad(where, `field "${key}" is missing`);
  if (typeof v !== 'string') bad(where, `field "${key}" must be a string, got ${Array.isArray(v) ? 'an array' : typeof v}`);
  if (v.length === 0) bad(where, `field "${key}" is empty`);
  return v;
}

function messages(rec: Record<string, unknown>, where: string): ChatMessage[] {
  const v = rec.messages;
  if (!Array.isArray(v) || v.length === 0) bad(where, 'field "messages" must be a non-empty array of {role, content}');
  const out = v.map((m, i) => {
    if (typeof m !== 'object' || m === null) bad(where, `messages[${i}] must be an object {role, content}`);
    const { role, content } = m as { role?: unknown; content?: unknown };
    if (typeof role !== 'string' || !ROLES.has(role)) bad(where, `messages[${i}].role must be one of ${[...ROLES].join(', ')}`);
    if (typeof content !== 'string') bad(where, `messages[${i}].content must be a string`);
    return { role, content };
  });
  if (!out.some((m) => m.role === 'assistant')) bad(where, 'messages has no assistant turn to learn from');
  return out;
}

function tokenize(rec: Record<string, unknown>, format: RecordFormat, tok: TextTokenizer, o: DatasetOptions, where: string): Example {
  const eos = tok.eosId === undefined ? [] : [tok.eosId];
  if (format === 'text') {
    const ids = [...tok.encode(str(rec, 'text', where)), ...eos];
    return { ids, labels: [...ids], where };
  }
  if (format === 'prompt-completion') {
    const p = tok.encode(str(rec, 'prompt', where));
    const c = [...tok.encode(str(rec, 'completion', where), false), ...eos];
    return { ids: [...p, ...c], labels: [...p.map(() => -100), ...c], where };
  }
  // chat: the tokens each assistant turn adds to the rendered prefix are its labels.
  const msgs = messages(rec, where);
  const ids: number[] = [];
  const labels: number[] = [];
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i] as ChatMessage;
    const upTo = tok.encode(tok.renderChat(msgs.slice(0, i + 1), false, o.chatTemplate), false);
    if (m.role === 'assistant') {
      // The prompt of this turn (up to the generation prompt) is context, not target.
      const prompt = tok.encode(tok.renderChat(msgs.slice(0, i), true, o.chatTemplate), false);
      if (!startsWith(prompt, ids) || !startsWith(upTo, prompt))
        bad(where, `the chat template does not render messages[${i}] as an extension of the turns before it; loss masking needs it to`);
      labels.push(...prompt.slice(ids.length).map(() => -100), ...upTo.slice(prompt.length));
    } else {
      if (!startsWith(upTo, ids)) bad(where, `the chat template does not render messages[${i}] as an extension of the turns before it`);
      labels.push(...upTo.slice(ids.length).map(() => -100));
    }
    ids.push(...upTo.slice(ids.length));
  }
  return { ids, labels, where };
}

function startsWith(a: number[], prefix: number[]): boolean {
  if (prefix.length > a.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

/** A Philox-seeded Fisher-Yates permutation of 0..n-1 for `purpose`. */
export function permutation(n: number, seed: Seed, purpose: string): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  if (n < 2) return order;
  const u = philox(seed, streamId(purpose), n, 'uniform');
  for (let i = n - 1; i > 0; i--) {
    const j = Math.min(i, Math.floor((u[i] ?? 0) * (i + 1)));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

export async function prepareDataset(path: string, tok: TextTokenizer, o: DatasetOptions): Promise<PreparedDataset> {
  const hash = createHash('sha256');
  const examples: Example[] = [];
  let format: RecordFormat | undefined = o.format === 'auto' ? undefined : o.format;
  let truncated = 0;
  for await (const { rec, where } of readRecords(datasetFiles(path, o.split ?? 'train'), hash)) {
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) bad(where, 'each line (record) must be a JSON object');
    const r = rec as Record<string, unknown>;
    format ??= detect(r, where);
    const ex = tokenize(r, format, tok, o, where);
    if (ex.ids.length > o.maxSeqLength) {
      truncated++;
      ex.ids.length = o.maxSeqLength;
      ex.labels.length = o.maxSeqLength;
    }
    // Labels are unshifted: token 0's label is never predicted, so a record needs one after it.
    if (!ex.labels.slice(1).some((l) => l !== -100))
      bad(where, `nothing to learn: after truncation to maxSeqLength ${o.maxSeqLength} the record has no target token`);
    examples.push(ex);
  }
  if (examples.length === 0 || !format) throw new LowrankError('invalid_file', `spec.dataset.path: ${path} has no records`);
  const order = permutation(examples.length, o.seed, 'dataset:shuffle');
  let shuffled = order.map((i) => examples[i] as Example);
  if (o.maxSamples !== undefined) shuffled = shuffled.slice(0, o.maxSamples);
  const nEval = o.evalFraction > 0 ? Math.max(1, Math.round(shuffled.length * o.evalFraction)) : 0;
  if (nEval >= shuffled.length)
    throw new LowrankError(
      'invalid_spec',
      `spec.dataset.evalFraction ${o.evalFraction} leaves no training record out of ${shuffled.length}; lower it or add records`,
    );
  const train = shuffled.slice(nEval);
  return {
    train,
    eval: shuffled.slice(0, nEval),
    format,
    digest: `sha256:${hash.digest('hex')}`,
    records: examples.length,
    truncated,
    trainTokens: train.reduce((n, e) => n + e.ids.length, 0),
  };
}
