/**
 * Adapter initialisations (METHODS): DoRA's magnitudes (§1.3), and PiSSA (§1.4, arXiv
 * 2404.02948), which changes the base (§0.5). PiSSA is PEFT's init_lora_weights="pissa":
 * W = U diag(σ) Vᵀ (fp32 thin SVD), A = diag(√(σ_r/s)) V_rᵀ, B = U_r diag(√(σ_r/s)), and
 * training runs on W_res = W − s·B·A, set on the model as its base weight.
 */
import { patternValue } from '../peft/adapter-dir.ts';
import { gemm, type LoraModule, randomizedSvd, type Seed, type SvdResult, streamId, svd } from './linalg.ts';
import { type ModelConfig, modulePath, PROJECTIONS, type Projection, type TrainModel } from './train.ts';

export interface PissaOptions {
  r: number;
  alpha: number;
  targets: readonly Projection[];
  useRslora?: boolean;
  layers?: readonly number[];
  /** PEFT's rank_pattern / alpha_pattern (first matching key wins). */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /**
   * Power iterations of a randomized SVD ("pissa_niter_k"); 0 or absent: the exact thin
   * SVD. The randomized one draws Philox(seed, "pissa:<module>") with `oversample` extra
   * probes (0 = torch.svd_lowrank's q = r).
   */
  niter?: number;
  oversample?: number;
  seed?: Seed;
}

function shape(config: ModelConfig, t: Projection): [number, number] {
  const qd = config.numHeads * config.headDim;
  const kvd = config.numKvHeads * config.headDim;
  const h = config.hiddenSize;
  const f = config.intermediateSize;
  const dims: Record<Projection, [number, number]> = {
    q_proj: [qd, h],
    k_proj: [kvd, h],
    v_proj: [kvd, h],
    o_proj: [h, qd],
    gate_proj: [f, h],
    up_proj: [f, h],
    down_proj: [h, f],
  };
  return dims[t];
}

/**
 * PiSSA on `model`: sets each target's base weight to W_res and returns the adapter to
 * train (also set on the model). Exporting it for use on the original W needs §0.5's
 * 2r conversion (A' = [A; A0], B' = [B | −B0]), which the caller keeps A0/B0 for.
 */
export function pissaInit(model: TrainModel, o: PissaOptions): Record<string, LoraModule> {
  const c = model.config;
  if (!Number.isSafeInteger(o.r) || o.r < 1) throw new TypeError('r must be a positive integer');
  if (!(Number.isFinite(o.alpha) && o.alpha > 0)) throw new TypeError('alpha must be a positive number');
  if (o.targets.length === 0 || o.targets.some((t) => !PROJECTIONS.includes(t))) {
    throw new TypeError(`targets must be a non-empty subset of ${PROJECTIONS.join(', ')}`);
  }
  const niter = o.niter ?? 0;
  const oversample = o.oversample ?? 0;
  if (!Number.isSafeInteger(niter) || niter < 0 || !Number.isSafeInteger(oversample) || oversample < 0)
    throw new TypeError('niter and oversample must be non-negative integers');
  const layers = o.layers ?? Array.from({ length: c.numLayers }, (_, i) => i);
  const modules: Record<string, LoraModule> = {};
  const residuals: Record<string, Float32Array> = {};
  for (const layer of layers) {
    for (const t of o.targets) {
      const [out, inDim] = shape(c, t);
      const path = modulePath(layer, PROJECTIONS.indexOf(t));
      const r = patternValue(o.rankPattern, path) ?? o.r;
      const alpha = patternValue(o.alphaPattern, path) ?? o.alpha;
      if (!Number.isSafeInteger(r) || r < 1) throw new TypeError(`rankPattern gives ${path} a rank that is not a positive integer`);
      if (r > Math.min(out, inDim)) throw new TypeError(`r = ${r} exceeds min(out, in) = ${Math.min(out, inDim)} of ${path}`);
      const scale = o.useRslora ? alpha / Math.sqrt(r) : alpha / r;
      const W = model.baseWeight(path);
      const m = { rows: out, cols: inDim, data: W };
      let f: SvdResult;
      if (niter > 0) {
        if (o.seed === undefined) throw new TypeError('the randomized SVD (niter > 0) needs a seed');
        f = randomizedSvd(m, { rank: r, oversample, niter, seed: o.seed, stream: streamId(`pissa:${path}`) });
      } else f = svd(m, { precision: 'f64' }); // fp32 LAPACK's truncation error reaches 1e-5 at gaps ~1e-2·σ1
      const { u, s, vt } = f;
      const k = u.cols;
      const A = new Float32Array(r * inDim);
      const B = new Float32Array(out * r);
      for (let i = 0; i < r; i++) {
        const g = Math.fround(Math.sqrt(Math.fround((s[i] ?? 0) / scale)));
        for (let j = 0; j < inDim; j++) A[i * inDim + j] = Math.fround(g * (vt.data[i * inDim + j] ?? 0));
        for (let row = 0; row < out; row++) B[row * r + i] = Math.fround((u.data[row * k + i] ?? 0) * g);
      }
      const ba = gemm({ rows: out, cols: r, data: B }, { rows: r, cols: inDim, data: A }, { alpha: scale });
      const res = new Float32Array(W.length);
      for (let i = 0; i < W.length; i++) res[i] = (W[i] ?? 0) - (ba.data[i] ?? 0);
      modules[path] = { r, in: inDim, out, A, B, scale };
      residuals[path] = res;
    }
  }
  model.setAdapter(modules);
  for (const [path, w] of Object.entries(residuals)) model.setBaseWeight(path, w);
  return modules;
}

/**
 * METHODS §0.5: an adapter trained on W_res, as one for the original W: A' = [A; A0],
 * B' = [B | −B0] at rank 2r and the same scale, so s·B'A' = s(BA − B0A0) and
 * W + s·B'A' = W_res + s·BA. `initial` is what pissaInit returned.
 */
export function exportForOriginalBase(
  trained: Record<string, LoraModule>,
  initial: Record<string, LoraModule>,
): Record<string, LoraModule> {
  const out: Record<string, LoraModule> = {};
  for (const [path, m] of Object.entries(trained)) {
    const m0 = initial[path];
    if (!m0 || m0.r !== m.r || m0.in !== m.in || m0.out !== m.out || m0.scale !== m.scale) {
      throw new TypeError(`module "${path}" has no matching initial factors (same r, in, out and scale)`);
    }
    const r2 = 2 * m.r;
    const A = new Float32Array(r2 * m.in);
    A.set(m.A, 0);
    A.set(m0.A, m.r * m.in);
    const B = new Float32Array(m.out * r2);
    for (let row = 0; row < m.out; row++) {
      for (let k = 0; k < m.r; k++) {
        B[row * r2 + k] = m.B[row * m.r + k] ?? 0;
        B[row * r2 + m.r + k] = -(m0.B[row * m.r + k] ?? 0);
      }
    }
    out[path] = { r: r2, in: m.in, out: m.out, A, B, scale: m.scale };
  }
  return out;
}

/**
 * DoRA's initial magnitudes (METHODS §1.3, PEFT): m = ‖W + s·BA‖ per output row of each
 * module, on the weights the model uses now. With these, DoRA starts equal to plain LoRA.
 */
export function doraMagnitudes(model: TrainModel, modules: Record<string, LoraModule>): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  for (const [path, m] of Object.entries(modules)) {
    const W = model.baseWeight(path);
    if (W.length !== m.out * m.in)
      throw new TypeError(`module "${path}" is ${m.out} x ${m.in}, the model's weight has ${W.length} entries`);
    const ba = gemm({ rows: m.out, cols: m.r, data: m.B }, { rows: m.r, cols: m.in, data: m.A }, { alpha: m.scale });
    const norms = new Float32Array(m.out);
    for (let o = 0; o < m.out; o++) {
      let ss = 0;
      for (let j = 0; j < m.in; j++) {
        const v = Math.fround((W[o * m.in + j] ?? 0) + (ba.data[o * m.in + j] ?? 0));
        ss += v * v;
      }
      norms[o] = Math.sqrt(ss);
    }
    out[path] = norms;
  }
  return out;
}
