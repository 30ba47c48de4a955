/**
 * LoRA-GA (METHODS §1.5, arXiv 2407.05000): initialise so the first LoRA step follows the
 * full fine-tuning gradient. G = (Σ_b ∇_W L_b) / n_batches per target weight, from the
 * engine's frozen-weight gradient capture (dYᵀX, P17), module groups in turn over the same
 * batches when the G buffers would exceed a memory budget; U, σ, V = svd_lowrank(G,
 * q = min(4r, out, in), niter = 4) (our seeded randomized SVD, exact when q is the full
 * rank or asked for), the direction picks r of the first 2r singular vectors for A and B,
 * the scale (`reference`: the paper's code, both factors ×out^¼/√γ, no σ; `peft`: PEFT's
 * lora_ga_init, B carries σ), and training runs on W_res = W − s·B·A (§0.5).
 */
import { permutation } from '../data/dataset.ts';
import { gemm, type LoraModule, randomizedSvd, type Seed, type SvdResult, streamId, svd } from './linalg.ts';
import { initLora, type Projection, type TokenBatch, type TrainModel } from './train.ts';

export type LoraGaDirection = 'ArB2r' | 'A2rBr' | 'ArBr' | 'random';
export type LoraGaScale = 'stable' | 'weight_svd' | 'gd_scale' | 'unit';

export interface LoraGaOptions {
  r: number;
  alpha: number;
  targets: readonly Projection[];
  useRslora?: boolean;
  layers?: readonly number[];
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  direction: LoraGaDirection;
  scale: LoraGaScale;
  gamma: number;
  variant: 'reference' | 'peft';
  seed: Seed;
  /** Exact thin SVD instead of svd_lowrank (parity tests substitute it on both sides). */
  exactSvd?: boolean;
}

/** Bytes of G buffers held at once; more target weights than this are processed in groups. */
const GROUP_BYTES = 2 ** 31;

export function checkLoraGa(o: LoraGaOptions): void {
  if (!['ArB2r', 'A2rBr', 'ArBr', 'random'].includes(o.direction)) throw new TypeError(`loraGa.direction ${o.direction} is unknown`);
  if (!['stable', 'weight_svd', 'gd_scale', 'unit'].includes(o.scale)) throw new TypeError(`loraGa.scale ${o.scale} is unknown`);
  if (o.variant !== 'reference' && o.variant !== 'peft') throw new TypeError('loraGa.variant must be reference or peft');
  if (o.variant === 'reference' && (o.scale === 'weight_svd' || o.scale === 'gd_scale'))
    throw new TypeError(`loraGa.scale ${o.scale} is PEFT's: set loraGa.variant peft (the reference offers stable and unit)`);
  if (!(Number.isFinite(o.gamma) && o.gamma > 0)) throw new TypeError('loraGa.gamma must be a positive number');
}

/**
 * The mean gradient of each module's frozen weight over `batches` batches (the gradient of
 * each batch's mean loss, summed, divided by the count of batches with a loss, as PEFT's
 * preprocess_loraga divides by its backward count).
 */
export async function estimateWeightGradients(
  model: TrainModel,
  modules: readonly string[],
  batches: number,
  batch: (i: number) => TokenBatch,
): Promise<Record<string, Float32Array>> {
  if (!Number.isSafeInteger(batches) || batches < 1) throw new TypeError('batches must be a positive integer');
  for (const m of modules) model.captureWeightGradient(m, true);
  try {
    // A batch without a labelled prediction (a prompt-only row) has no loss: it is skipped.
    let used = 0;
    for (let i = 0; i < batches; i++) {
      const b = batch(i);
      if (!predictsSomething(b)) continue;
      await model.forward(b, { backward: true });
      used++;
    }
    if (used === 0) throw new TypeError(`none of the ${batches} gradient-estimation batches has a labelled token to predict`);
    const out: Record<string, Float32Array> = {};
    for (const m of modules) {
      const g = model.weightGradient(m);
      for (let j = 0; j < g.length; j++) g[j] = (g[j] as number) / used;
      out[m] = g;
    }
    return out;
  } finally {
    for (const m of modules) model.captureWeightGradient(m, false);
  }
}

/** Whether some position t ≥ 1 of a row is labelled (the engine's loss has a term). */
function predictsSomething(b: TokenBatch): boolean {
  if (!b.labels) return false;
  for (let i = 0; i < b.rows * b.seq; i++) if (i % b.seq > 0 && b.labels[i] !== -100) return true;
  return false;
}

/** Top singular value of W (PEFT's weight_svd scale). */
function topSingular(w: Float32Array, out: number, inDim: number, o: LoraGaOptions, path: string): number {
  const m = { rows: out, cols: inDim, data: w };
  const f = o.exactSvd
    ? svd(m, { precision: 'f64' })
    : randomizedSvd(m, { rank: 1, oversample: 0, niter: 4, seed: o.seed, stream: streamId(`lora-ga:${path}:W`) });
  return f.s[0] ?? 0;
}

/**
 * A [r, in] and B [out, r] from G's SVD (§1.5 steps 2–4) for a module of scale `scale`;
 * `W` is needed by the weight_svd scale only.
 */
export function loraGaFactors(
  G: Float32Array,
  out: number,
  inDim: number,
  r: number,
  scale: number,
  o: LoraGaOptions,
  path: string,
  W?: Float32Array,
): { A: Float32Array; B: Float32Array } {
  if (2 * r > Math.min(out, inDim)) throw new TypeError(`LoRA-GA needs 2r = ${2 * r} <= min(out, in) = ${Math.min(out, inDim)} at ${path}`);
  const q = Math.min(4 * r, out, inDim);
  const m = { rows: out, cols: inDim, data: G };
  const f: SvdResult =
    o.exactSvd || q === Math.min(out, inDim)
      ? svd(m, { precision: 'f64' }) // exact: in double, as the singular vectors at small gaps need
      : randomizedSvd(m, { rank: q, oversample: 0, niter: 4, seed: o.seed, stream: streamId(`lora-ga:${path}`) });
  const k = f.u.cols;
  let aIdx: number[];
  let bIdx: number[];
  const range = (from: number, n: number, step = 1) => Array.from({ length: n }, (_, i) => from + i * step);
  if (o.direction === 'ArB2r') [aIdx, bIdx] = [range(0, r), range(r, r)];
  else if (o.direction === 'A2rBr') [aIdx, bIdx] = [range(r, r), range(0, r)];
  else if (o.direction === 'ArBr') [aIdx, bIdx] = [range(1, r, 2), range(0, r, 2)];
  else {
    const perm = permutation(2 * r, o.seed, `lora-ga:${path}:random`).slice(0, r);
    [aIdx, bIdx] = [perm, perm];
  }
  const peft = o.variant === 'peft';
  let fa = 1;
  let fb = 1;
  if (o.scale === 'stable') {
    const f4 = out ** 0.25 / Math.sqrt(o.gamma);
    fb = f4;
    if (!peft) fa = f4;
  } else if (o.scale === 'gd_scale') {
    fa = 1 / scale;
    fb = 1 / scale;
  } else if (o.scale === 'weight_svd') {
    const s0 = f.s[bIdx[0] as number] ?? 0;
    if (!W) throw new TypeError('the weight_svd scale needs the base weight');
    if (s0 > 0) fb = topSingular(W, out, inDim, o, path) / s0;
  }
  const A = new Float32Array(r * inDim);
  const B = new Float32Array(out * r);
  for (let i = 0; i < r; i++) {
    const ai = aIdx[i] as number;
    const bi = bIdx[i] as number;
    for (let j = 0; j < inDim; j++) A[i * inDim + j] = Math.fround((f.vt.data[ai * inDim + j] as number) * fa);
    // PEFT: B = (U·diag(σ_B)) then × the scale factor, each rounded to f32 in turn.
    const sigma = peft ? (f.s[bi] as number) : 1;
    for (let row = 0; row < out; row++) B[row * r + i] = Math.fround(Math.fround((f.u.data[row * k + bi] as number) * sigma) * fb);
  }
  return { A, B };
}

/**
 * LoRA-GA on `model`: estimates G over `batches` batches, sets each target's base weight to
 * W_res = W − s·B·A and the factors as the adapter, and returns them (the initial factors
 * the §0.5 export needs).
 */
export async function loraGaInit(
  model: TrainModel,
  o: LoraGaOptions,
  batches: number,
  batch: (i: number) => TokenBatch,
): Promise<Record<string, LoraModule>> {
  checkLoraGa(o);
  const layout = initLora(model.config, { ...o, seed: o.seed });
  const paths = Object.keys(layout);
  for (const p of paths) {
    const m = layout[p] as LoraModule;
    if (2 * m.r > Math.min(m.out, m.in))
      throw new TypeError(`LoRA-GA needs 2r = ${2 * m.r} <= min(out, in) = ${Math.min(m.out, m.in)} at ${p}`);
  }
  const groups: string[][] = [[]];
  let bytes = 0;
  for (const p of paths) {
    const m = layout[p] as LoraModule;
    const size = 4 * m.out * m.in;
    const current = groups.at(-1) as string[];
    if (current.length > 0 && bytes + size > GROUP_BYTES) {
      groups.push([p]);
      bytes = size;
    } else {
      current.push(p);
      bytes += size;
    }
  }
  const modules: Record<string, LoraModule> = {};
  const residuals: Record<string, Float32Array> = {};
  for (const group of groups) {
    const grads = await estimateWeightGradients(model, group, batches, batch);
    for (const p of group) {
      const m = layout[p] as LoraModule;
      const W = model.baseWeight(p);
      const { A, B } = loraGaFactors(grads[p] as Float32Array, m.out, m.in, m.r, m.scale, o, p, W);
      delete grads[p];
      const res = residual(W, A, B, m);
      modules[p] = { ...m, A, B };
      residuals[p] = res;
    }
  }
  model.setAdapter(modules);
  for (const [p, w] of Object.entries(residuals)) model.setBaseWeight(p, w);
  return modules;
}

/** W − s·(B·A) in f32 (PEFT: W − scaling · (B.float() @ A.float())). */
function residual(W: Float32Array, A: Float32Array, B: Float32Array, m: LoraModule): Float32Array {
  const ba = gemm({ rows: m.out, cols: m.r, data: B }, { rows: m.r, cols: m.in, data: A }, { alpha: m.scale }).data;
  const res = new Float32Array(W.length);
  for (let i = 0; i < W.length; i++) res[i] = (W[i] as number) - (ba[i] as number);
  return res;
}
