/**
 * EVA (METHODS §1.6, arXiv 2410.07170; PEFT's tuners/lora/eva.py): A from an incremental
 * PCA of each target module's inputs over calibration batches, B = 0, ranks redistributed
 * across modules by explained variance. The base is unchanged.
 *
 * As PEFT's get_eva_state_dict: modules whose first-batch inputs are identical (q/k/v,
 * gate/up) share one IPCA (found by hashing those inputs); each IPCA computes
 * round(r·ρ) components (Python's half-to-even round) and stops being fed once its
 * components up to its current rank have cosine ≥ τ with the previous batch's; after
 * every batch the budget Σr goes to the largest explained-variance ratios pooled over
 * modules (stable order on ties), a shared group's first module taking the group's
 * largest count. Inputs are the rows of tokens with attention = 1 and (useLabelMask)
 * label ≠ −100. The IPCA is sklearn's (running mean and variance, centred batch under
 * diag(σ)·components and a mean-correction row), its inner SVD our seeded randomized
 * SVD at q = 2·n_comp, niter 4 (or exact), signs flipped on V as sklearn's svd_flip.
 */
import { createHash } from 'node:crypto';
import { patternValue } from '../peft/adapter-dir.ts';
import { type LoraModule, randomizedSvd, type Seed, streamId, svd } from './linalg.ts';
import { initLora, type Projection, type TokenBatch, type TrainModel } from './train.ts';

export interface EvaOptions {
  r: number;
  alpha: number;
  targets: readonly Projection[];
  useRslora?: boolean;
  layers?: readonly number[];
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  rho: number;
  tau: number;
  whiten: boolean;
  adjustScalingFactors: boolean;
  useLabelMask: boolean;
  seed: Seed;
  /** Exact SVD inside the IPCA (PEFT's IncrementalPCA(lowrank=False)); parity tests. */
  exactSvd?: boolean;
}

/** A calibration batch; `attention` (1 = real token) defaults to all ones. */
export type EvaBatch = TokenBatch & { attention?: Uint8Array };

export interface EvaResult {
  /** Modules with rank ≥ 1: A = components, B = 0, scale from the (adjusted) alpha. */
  modules: Record<string, LoraModule>;
  /** PEFT's rank_pattern / alpha_pattern for the written adapter_config.json (vs r, alpha). */
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** Modules EVA gave rank 0 (no adapter, left out of target_modules). */
  dropped: string[];
  /** Calibration batches run (forwards after the hashing one). */
  batches: number;
  /** Explained-variance ratios per IPCA module (for diagnostics and tests). */
  ratios: Record<string, Float64Array>;
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** sklearn/PEFT IncrementalPCA state (float64 statistics, f32 SVD). */
class Ipca {
  readonly nComp: number;
  readonly features: number;
  mean?: Float64Array;
  variance?: Float64Array;
  seen = 0;
  components?: Float64Array; // [nComp, features]
  singular?: Float64Array;
  ratio?: Float64Array;
  converged: boolean[];

  constructor(nComp: number, features: number) {
    this.nComp = nComp;
    this.features = features;
    this.converged = new Array(nComp).fill(false);
  }

  /** One partial_fit on X [n, features]. */
  fit(X: Float64Array, n: number, o: { exact: boolean; seed: Seed; stream: bigint }): void {
    const d = this.features;
    const first = this.components === undefined;
    // _incremental_mean_and_var
    const newSum = new Float64Array(d);
    for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) newSum[j] = (newSum[j] as number) + (X[i * d + j] as number);
    const total = this.seen + n;
    const lastSum = new Float64Array(d);
    if (this.mean) for (let j = 0; j < d; j++) lastSum[j] = (this.mean[j] as number) * this.seen;
    const mean = new Float64Array(d);
    const newVar = new Float64Array(d);
    for (let j = 0; j < d; j++) {
      mean[j] = ((lastSum[j] as number) + (newSum[j] as number)) / total;
      const t = (newSum[j] as number) / n;
      let c = 0;
      let sq = 0;
      for (let i = 0; i < n; i++) {
        const v = (X[i * d + j] as number) - t;
        c += v;
        sq += v * v;
      }
      newVar[j] = sq - (c * c) / n;
    }
    const variance = new Float64Array(d);
    if (!this.variance) for (let j = 0; j < d; j++) variance[j] = (newVar[j] as number) / total;
    else {
      const lastOverNew = this.seen / n;
      for (let j = 0; j < d; j++) {
        const diff = (lastSum[j] as number) / lastOverNew - (newSum[j] as number);
        variance[j] = ((this.variance[j] as number) * this.seen + (newVar[j] as number) + (lastOverNew / total) * diff * diff) / total;
      }
    }
    // The matrix whose SVD updates the components.
    let rows: number;
    let M: Float32Array;
    if (first) {
      rows = n;
      M = new Float32Array(n * d);
      for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) M[i * d + j] = (X[i * d + j] as number) - (mean[j] as number);
    } else {
      const k = this.nComp;
      rows = k + n + 1;
      M = new Float32Array(rows * d);
      const comps = this.components as Float64Array;
      const sing = this.singular as Float64Array;
      for (let i = 0; i < k; i++) for (let j = 0; j < d; j++) M[i * d + j] = (sing[i] as number) * (comps[i * d + j] as number);
      const batchMean = new Float64Array(d);
      for (let j = 0; j < d; j++) batchMean[j] = (newSum[j] as number) / n;
      for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) M[(k + i) * d + j] = (X[i * d + j] as number) - (batchMean[j] as number);
      const f = Math.sqrt((this.seen / total) * n);
      const last = this.mean as Float64Array;
      for (let j = 0; j < d; j++) M[(k + n) * d + j] = f * ((last[j] as number) - (batchMean[j] as number));
    }
    const q = Math.min(2 * this.nComp, rows, d);
    const m = { rows, cols: d, data: M };
    const res =
      o.exact || q === Math.min(rows, d) ? svd(m) : randomizedSvd(m, { rank: q, oversample: 0, niter: 4, seed: o.seed, stream: o.stream });
    const { s, vt } = res;
    // svd_flip(u_based_decision=False): the largest-|.| entry of each row of Vᵀ positive.
    const comps = new Float64Array(this.nComp * d);
    const sing = new Float64Array(this.nComp);
    let varSum = 0;
    for (let j = 0; j < d; j++) varSum += (variance[j] as number) * total;
    const ratio = new Float64Array(this.nComp);
    for (let i = 0; i < this.nComp; i++) {
      let best = 0;
      for (let j = 1; j < d; j++) if (Math.abs(vt.data[i * d + j] as number) > Math.abs(vt.data[i * d + best] as number)) best = j;
      const sign = (vt.data[i * d + best] as number) < 0 ? -1 : 1;
      for (let j = 0; j < d; j++) comps[i * d + j] = sign * (vt.data[i * d + j] as number);
      sing[i] = s[i] as number;
      ratio[i] = ((s[i] as number) * (s[i] as number)) / varSum;
    }
    const previous = this.components;
    this.components = comps;
    this.singular = sing;
    this.ratio = ratio;
    this.mean = mean;
    this.variance = variance;
    this.seen = total;
    if (previous) {
      // torch cosine_similarity per component, eps 1e-8 on each norm
      for (let i = 0; i < this.nComp; i++) {
        let dot = 0;
        let na = 0;
        let nb = 0;
        for (let j = 0; j < d; j++) {
          const a = comps[i * d + j] as number;
          const b = previous[i * d + j] as number;
          dot += a * b;
          na += a * a;
          nb += b * b;
        }
        this.converged[i] = dot / (Math.max(Math.sqrt(na), 1e-8) * Math.max(Math.sqrt(nb), 1e-8)) >= this.tau;
      }
    }
  }

  tau = 0.99;
}

/** The rows of a module's input [N, in] that EVA uses. */
function maskedRows(x: Float32Array, inDim: number, keep: Uint8Array, count: number): Float64Array {
  const out = new Float64Array(count * inDim);
  let r = 0;
  for (let i = 0; i < keep.length; i++) {
    if (!keep[i]) continue;
    for (let j = 0; j < inDim; j++) out[r * inDim + j] = x[i * inDim + j] as number;
    r++;
  }
  return out;
}

function tokenMask(b: EvaBatch, useLabelMask: boolean): { keep: Uint8Array; count: number } {
  const n = b.rows * b.seq;
  const keep = new Uint8Array(n);
  let count = 0;
  for (let i = 0; i < n; i++) {
    const ok = (b.attention ? b.attention[i] !== 0 : true) && (!useLabelMask || !b.labels || b.labels[i] !== -100);
    keep[i] = ok ? 1 : 0;
    if (ok) count++;
  }
  return { keep, count };
}

/**
 * Runs EVA on `model` (which must carry no adapter: its forward is the base) over at most
 * `maxBatches` calibration batches, cycling `batches` of them as PEFT cycles its dataloader.
 * Throws a TypeError naming what to change when a module has not converged by then.
 */
export async function evaInit(
  model: TrainModel,
  o: EvaOptions,
  batches: number,
  maxBatches: number,
  batch: (i: number) => EvaBatch,
): Promise<EvaResult> {
  if (!(o.rho >= 1 && Number.isFinite(o.rho))) throw new TypeError('eva.rho must be a number >= 1');
  if (!(o.tau >= 0 && o.tau <= 1)) throw new TypeError('eva.tau must be in [0, 1]');
  if (!Number.isSafeInteger(batches) || batches < 1) throw new TypeError('batches must be a positive integer');
  const layout = initLora(model.config, { ...o, alpha: o.alpha, seed: o.seed });
  const names = Object.keys(layout);
  const maxComp: Record<string, number> = {};
  let budget = 0;
  for (const name of names) {
    const m = layout[name] as LoraModule;
    maxComp[name] = roundHalfEven(m.r * o.rho);
    if ((maxComp[name] as number) > m.in)
      throw new TypeError(`eva: ${name} would need ${maxComp[name]} components but has ${m.in} input features; lower rank or rho`);
    budget += m.r;
  }

  // Hash pass: identical first-batch inputs share one IPCA.
  const first = batch(0);
  await model.forward(first);
  const firstMask = tokenMask(first, o.useLabelMask);
  const byHash = new Map<string, string[]>();
  for (const name of names) {
    const x = maskedRows(model.moduleInput(name), (layout[name] as LoraModule).in, firstMask.keep, firstMask.count);
    const h = createHash('sha256').update(new Uint8Array(x.buffer)).digest('hex');
    byHash.set(h, [...(byHash.get(h) ?? []), name]);
  }
  const equalTo = new Map<string, string>();
  for (const group of byHash.values()) {
    if (group.length < 2) continue;
    const top = Math.max(...group.map((n) => maxComp[n] as number));
    for (const n of group) maxComp[n] = top;
    for (const n of group.slice(1)) equalTo.set(n, group[0] as string);
  }
  const hooks = names.filter((n) => !equalTo.has(n));
  const ipca = new Map(hooks.map((n) => [n, Object.assign(new Ipca(maxComp[n] as number, (layout[n] as LoraModule).in), { tau: o.tau })]));
  // PEFT's layer_hook_map order: the hooked modules, then the ones sharing another's input.
  const order = [...hooks, ...equalTo.keys()];
  const hookOf = (n: string) => equalTo.get(n) ?? n;

  const distribute = (): Record<string, number> => {
    const pool: { key: string; v: number; i: number }[] = [];
    for (const k of order) {
      const ratio = (ipca.get(hookOf(k)) as Ipca).ratio as Float64Array;
      for (let c = 0; c < (maxComp[k] as number); c++) pool.push({ key: k, v: ratio[c] as number, i: pool.length });
    }
    pool.sort((a, b) => b.v - a.v || a.i - b.i);
    const counts: Record<string, number> = Object.fromEntries(order.map((k) => [k, 0]));
    for (const p of pool.slice(0, budget)) counts[p.key] = (counts[p.key] as number) + 1;
    for (const [k, kh] of equalTo) {
      const rank = counts[k] as number;
      const rankHook = counts[kh] as number;
      if (rankHook >= rank) continue;
      counts[kh] = rank;
      counts[k] = rankHook;
    }
    return counts;
  };

  let rankDist: Record<string, number> = { ...maxComp };
  const done = new Map(hooks.map((n) => [n, false]));
  const active = new Map(hooks.map((n) => [n, true]));
  let run = 0;
  for (let step = 0; ; step++) {
    for (const n of hooks) {
      const h = ipca.get(n) as Ipca;
      const converged = h.converged.slice(0, rankDist[n]).every(Boolean);
      if (!done.get(n) && converged && active.get(n)) {
        active.set(n, false);
        done.set(n, true);
      } else if (done.get(n) && !converged) {
        active.set(n, true);
        done.set(n, false);
      }
    }
    if ([...done.values()].every(Boolean)) break;
    if (step >= maxBatches) {
      const open = hooks.filter((n) => !done.get(n));
      throw new TypeError(
        `eva: ${open.length} module(s) (${open.slice(0, 3).join(', ')}${open.length > 3 ? ', …' : ''}) did not converge within ${maxBatches} calibration batches; raise eva.batches, lower eva.tau or give more data`,
      );
    }
    const b = batch(step % batches);
    await model.forward(b);
    run++;
    const { keep, count } = tokenMask(b, o.useLabelMask);
    for (const n of hooks) {
      if (!active.get(n)) continue;
      const h = ipca.get(n) as Ipca;
      if (count < h.nComp) continue; // PEFT skips a batch with fewer tokens than components
      const inDim = (layout[n] as LoraModule).in;
      h.fit(maskedRows(model.moduleInput(n), inDim, keep, count), count, {
        exact: o.exactSvd === true,
        seed: o.seed,
        stream: streamId(`eva:${n}`),
      });
    }
    if (hooks.every((n) => (ipca.get(n) as Ipca).components !== undefined)) rankDist = distribute();
  }

  const modules: Record<string, LoraModule> = {};
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  const dropped: string[] = [];
  for (const name of names) {
    const m = layout[name] as LoraModule;
    const h = ipca.get(hookOf(name)) as Ipca;
    const rank = rankDist[name] as number;
    if (rank === 0) {
      dropped.push(name);
      continue;
    }
    const r0 = m.r;
    let alpha = patternValue(o.alphaPattern, name) ?? o.alpha;
    if (rank !== r0 && o.adjustScalingFactors) alpha *= rank / r0;
    const A = new Float32Array(rank * m.in);
    const comps = h.components as Float64Array;
    for (let i = 0; i < rank; i++) {
      const w = o.whiten ? Math.sqrt((h.singular as Float64Array)[i] as number) : 1;
      for (let j = 0; j < m.in; j++) A[i * m.in + j] = (comps[i * m.in + j] as number) / w;
    }
    modules[name] = {
      r: rank,
      in: m.in,
      out: m.out,
      A,
      B: new Float32Array(m.out * rank),
      scale: o.useRslora ? alpha / Math.sqrt(rank) : alpha / rank,
    };
    if (rank !== o.r) rankPattern[name] = rank;
    if (alpha !== o.alpha) alphaPattern[name] = alpha;
  }
  const ratios = Object.fromEntries(hooks.map((n) => [n, (ipca.get(n) as Ipca).ratio as Float64Array]));
  return { modules, rankPattern, alphaPattern, dropped, batches: run, ratios };
}
