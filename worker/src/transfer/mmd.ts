/**
 * MMD between synthetic prompts and the seeds (METHODS §4.1 "Recorded": filtering should
 * bring the accepted prompts closer to the seeds than the unfiltered candidates). Texts
 * are embedded without another model: the mean of the source base's input embedding rows
 * over the text's tokens, L2-normalised (a bag-of-embeddings; only the rows used are
 * converted, so a bf16 table of a large vocabulary is not expanded). The squared MMD is
 * the biased V-statistic with a Gaussian kernel whose bandwidth is the median pairwise
 * distance of the pooled samples (the median heuristic), computed in f64.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import { readSafetensors, type Tensor, tensorToFloat32 } from '../native/safetensors.ts';
import type { TextTokenizer } from '../tokenizer/tokenizer.ts';

const EMBED = 'model.embed_tokens.weight';

export class EmbeddingTable {
  readonly #t: Tensor;
  readonly hidden: number;

  private constructor(t: Tensor) {
    this.#t = t;
    this.hidden = t.shape[1] as number;
  }

  static load(baseDir: string): EmbeddingTable {
    for (const f of readdirSync(baseDir).filter((n) => n.endsWith('.safetensors'))) {
      const t = readSafetensors(join(baseDir, f)).tensors[EMBED];
      if (t && t.shape.length === 2) return new EmbeddingTable(t);
    }
    throw new LowrankError('invalid_file', `${baseDir}: no ${EMBED} [vocab, hidden] in its safetensors files`);
  }

  row(id: number): Float32Array {
    const h = this.hidden;
    const data = (this.#t.data as Float32Array).subarray(id * h, (id + 1) * h);
    return this.#t.dtype === 'F32' ? data : tensorToFloat32({ ...this.#t, shape: [h], data } as Tensor);
  }

  /** Mean embedding of each text's tokens, L2-normalised. */
  embed(tok: TextTokenizer, texts: string[]): Float64Array[] {
    return texts.map((text) => {
      const v = new Float64Array(this.hidden);
      const ids = tok.encode(text, false);
      for (const id of ids) {
        const r = this.row(id);
        for (let j = 0; j < v.length; j++) v[j] = (v[j] as number) + (r[j] as number);
      }
      let n = 0;
      for (const x of v) n += x * x;
      n = Math.sqrt(n) || 1;
      for (let j = 0; j < v.length; j++) v[j] = (v[j] as number) / n;
      return v;
    });
  }
}

function dist2(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let j = 0; j < a.length; j++) s += ((a[j] as number) - (b[j] as number)) ** 2;
  return s;
}

/** The median pairwise squared distance of the samples: the kernel's bandwidth (median heuristic). */
export function medianBandwidth(xs: Float64Array[]): number {
  const d: number[] = [];
  for (let i = 0; i < xs.length; i++) for (let j = i + 1; j < xs.length; j++) d.push(dist2(xs[i] as Float64Array, xs[j] as Float64Array));
  d.sort((a, b) => a - b);
  return d.length ? (d[Math.floor(d.length / 2)] as number) || 1 : 1;
}

/** Biased MMD² with k(x, y) = exp(-‖x − y‖² / bw), bw = the median squared distance unless given. */
export function mmd2(x: Float64Array[], y: Float64Array[], bw = medianBandwidth([...x, ...y])): number {
  if (x.length === 0 || y.length === 0) return Number.NaN;
  const k = (a: Float64Array, b: Float64Array) => Math.exp(-dist2(a, b) / bw);
  const mean = (p: Float64Array[], q: Float64Array[]) => {
    let s = 0;
    for (const a of p) for (const b of q) s += k(a, b);
    return s / (p.length * q.length);
  };
  return mean(x, x) + mean(y, y) - 2 * mean(x, y);
}
