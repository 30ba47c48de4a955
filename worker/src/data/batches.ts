/**
 * Examples into the engine's token batches. Without packing each example is a row; with
 * packing examples are laid end to end into rows of at most maxSeqLength tokens (in
 * order, next row when the next example doesn't fit), numbered by `segments` so attention
 * and positions restart per example. Rows of a batch are right-padded to the longest
 * (padding has label -100 and, being after every real token, is never attended to).
 */
import type { TokenBatch } from '../native/train.ts';
import type { Example } from './dataset.ts';

export interface Row {
  ids: number[];
  labels: number[];
  segments?: number[];
}

export function toRows(examples: Example[], packing: boolean, maxSeqLength: number): Row[] {
  if (!packing) return examples.map((e) => ({ ids: e.ids, labels: e.labels }));
  const rows: Row[] = [];
  let cur: Row | undefined;
  let doc = 0;
  for (const e of examples) {
    if (!cur || cur.ids.length + e.ids.length > maxSeqLength) {
      cur = { ids: [], labels: [], segments: [] };
      rows.push(cur);
      doc = 0;
    }
    cur.ids.push(...e.ids);
    cur.labels.push(...e.labels);
    for (let i = 0; i < e.ids.length; i++) cur.segments?.push(doc);
    doc++;
  }
  return rows;
}

export function toBatch(rows: Row[], pad: number): TokenBatch {
  const seq = Math.max(...rows.map((r) => r.ids.length));
  const n = rows.length * seq;
  const tokens = new Int32Array(n).fill(pad);
  const labels = new Int32Array(n).fill(-100);
  const packed = rows.some((r) => r.segments);
  const segments = packed ? new Int32Array(n) : undefined;
  rows.forEach((r, i) => {
    tokens.set(r.ids, i * seq);
    labels.set(r.labels, i * seq);
    if (segments) {
      const s = r.segments ?? r.ids.map(() => 0);
      segments.set(s, i * seq);
      // Padding is a document of its own.
      segments.fill((s.at(-1) ?? 0) + 1, i * seq + s.length, (i + 1) * seq);
    }
  });
  return { tokens, labels, rows: rows.length, seq, ...(segments ? { segments } : {}) };
}

/** Consecutive batches of `size` rows (the last may be smaller). */
export function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
