/**
 * LoRA-SB (METHODS §1.7, arXiv 2411.19557): ΔW = s·B R A with A and B frozen and only the
 * r×r core R trained (the engine's core slots). Init from the first full fine-tuning
 * update, estimated as a sign-like (Adam) step: ΔŴ = −η₀·sign(Σ_b ∇_W L_b), η₀ the first
 * warmup step's learning rate; svd_lowrank(ΔŴᵀ, q = r, niter) gives ΔŴᵀ ≈ U diag(σ) Vᵀ and
 * B = V, R = diag(σ), A = Uᵀ (fp32; [ref] casts to bf16). α = r (s = 1); the base is not
 * changed, so training starts at W + B R A ≈ W + ΔŴ. Export is plain LoRA, exactly:
 * lora_A = R A, lora_B = B, α = r.
 */
import { gemm, type LoraModule, randomizedSvd, type Seed, streamId, svd } from './linalg.ts';
import { initLora, type Projection, type TokenBatch, type TrainModel } from './train.ts';
import { estimateWeightGradients } from './train-lora-ga.ts';

export interface LoraSbOptions {
  r: number;
  targets: readonly Projection[];
  layers?: readonly number[];
  rankPattern?: Record<string, number>;
  /** η₀: the learning rate of the first warmup step. */
  lr0: number;
  niter: number;
  seed: Seed;
  /** Exact SVD instead of the randomized one (parity tests). */
  exactSvd?: boolean;
}

export interface LoraSbInit {
  /** A, B (frozen) at scale 1 = α/r. */
  modules: Record<string, LoraModule>;
  /** R [r, r] per module, trained. */
  cores: Record<string, Float32Array>;
}

/** B, R, A from an update estimate ΔŴ [out, in] (§1.7 step 2). */
export function loraSbFactors(
  dW: Float32Array,
  out: number,
  inDim: number,
  r: number,
  o: { niter: number; seed: Seed; exactSvd?: boolean },
  path: string,
): { A: Float32Array; B: Float32Array; R: Float32Array } {
  if (r > Math.min(out, inDim)) throw new TypeError(`r = ${r} exceeds min(out, in) = ${Math.min(out, inDim)} of ${path}`);
  // ΔŴᵀ [in, out]
  const t = new Float32Array(inDim * out);
  for (let i = 0; i < out; i++) for (let j = 0; j < inDim; j++) t[j * out + i] = dW[i * inDim + j] as number;
  const m = { rows: inDim, cols: out, data: t };
  const f = o.exactSvd
    ? svd(m, { precision: 'f64' })
    : randomizedSvd(m, { rank: r, oversample: 0, niter: o.niter, seed: o.seed, stream: streamId(`lora-sb:${path}`) });
  const k = f.u.cols;
  const A = new Float32Array(r * inDim); // Uᵀ [r, in]
  const B = new Float32Array(out * r); // V [out, r]
  const R = new Float32Array(r * r);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < inDim; j++) A[i * inDim + j] = f.u.data[j * k + i] as number;
    for (let row = 0; row < out; row++) B[row * r + i] = f.vt.data[i * out + row] as number;
    R[i * r + i] = f.s[i] as number;
  }
  return { A, B, R };
}

/**
 * LoRA-SB on `model`: the sign of the summed weight gradients over `samples` batches, the
 * factors per module, set on the model (A, B frozen, R trained).
 */
export async function loraSbInit(
  model: TrainModel,
  o: LoraSbOptions,
  samples: number,
  batch: (i: number) => TokenBatch,
): Promise<LoraSbInit> {
  if (!(Number.isFinite(o.lr0) && o.lr0 > 0))
    throw new TypeError('the first warmup step has no learning rate: LoRA-SB needs a warmup (schedule.warmupSteps or warmupRatio > 0)');
  if (!Number.isSafeInteger(o.niter) || o.niter < 0) throw new TypeError('loraSb.niter must be a non-negative integer');
  // α = r: scale 1 for every module.
  const layout = initLora(model.config, {
    r: o.r,
    alpha: o.r,
    targets: o.targets,
    seed: o.seed,
    ...(o.layers ? { layers: o.layers } : {}),
    ...(o.rankPattern ? { rankPattern: o.rankPattern, alphaPattern: o.rankPattern } : {}),
  });
  for (const [p, m] of Object.entries(layout))
    if (m.r > Math.min(m.out, m.in)) throw new TypeError(`r = ${m.r} exceeds min(out, in) = ${Math.min(m.out, m.in)} of ${p}`);
  const grads = await estimateWeightGradients(model, Object.keys(layout), samples, batch);
  const modules: Record<string, LoraModule> = {};
  const cores: Record<string, Float32Array> = {};
  for (const [p, m] of Object.entries(layout)) {
    const g = grads[p] as Float32Array;
    const dW = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) dW[i] = -o.lr0 * Math.sign(g[i] as number);
    const { A, B, R } = loraSbFactors(dW, m.out, m.in, m.r, o, p);
    modules[p] = { ...m, A, B, scale: 1 };
    cores[p] = R;
  }
  model.setAdapter(modules, {}, cores);
  return { modules, cores };
}

/** §1.7's export: plain LoRA with lora_A = R A, lora_B = B at scale 1 (α = r). */
export function exportLoraSb(modules: Record<string, LoraModule>, cores: Record<string, Float32Array>): Record<string, LoraModule> {
  const out: Record<string, LoraModule> = {};
  for (const [p, m] of Object.entries(modules)) {
    const R = cores[p];
    if (!R) throw new TypeError(`module "${p}" has no LoRA-SB core R`);
    const RA = gemm({ rows: m.r, cols: m.r, data: R }, { rows: m.r, cols: m.in, data: m.A }).data;
    out[p] = { ...m, A: RA, scale: m.scale };
  }
  return out;
}
