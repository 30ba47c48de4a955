/**
 * A real, tiny training run for the catalog's seeded adapters: LoRA factors (A Gaussian, B
 * zero, as PEFT initialises them) fitted by full-batch gradient descent to a regression
 * task y = T x with a decaying-spectrum T per module, recording training and held-out loss.
 * It makes adapters whose weights, spectra and loss curves are what training produced, not
 * numbers written by hand. Deterministic: every draw comes from the native core's Philox stream.
 */
import { type LoraModule, philox } from '../../../../worker/src/native/linalg.ts';

export interface ToyRun {
  modules: Record<string, LoraModule>;
  lossCurve: { step: number; loss: number; evalLoss: number }[];
}

export function trainToyLora(o: {
  seed: number;
  hidden: number;
  r: number;
  alpha: number;
  moduleNames: string[];
  steps: number;
  lr: number;
}): ToyRun {
  const { hidden: d, r, seed } = o;
  const scale = o.alpha / r;
  let stream = 0;
  const normal = (n: number, sd: number) => Float64Array.from(philox(seed, stream++, n, 'normal'), (x) => x * sd);
  const modules: Record<string, LoraModule> = {};
  const curves = new Map<number, { loss: number; evalLoss: number; count: number }>();
  for (const name of o.moduleNames) {
    // Target T = Σ_i σ_i u_i v_iᵀ, 12 directions, σ_i = 2^(-i/2): a spectrum a rank-r adapter can mostly capture.
    const T = new Float64Array(d * d);
    for (let i = 0; i < 12; i++) {
      const u = normal(d, 1 / Math.sqrt(d));
      const v = normal(d, 1 / Math.sqrt(d));
      const s = 2 ** (-i / 2) * 4;
      for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) T[a * d + b] = (T[a * d + b] ?? 0) + s * (u[a] ?? 0) * (v[b] ?? 0);
    }
    const n = 256;
    const m = 64;
    const X = normal(n * d, 1);
    const Xe = normal(m * d, 1);
    const A = normal(r * d, 1 / Math.sqrt(d));
    const B = new Float64Array(d * r);
    const lossOn = (Xs: Float64Array, rows: number) => {
      const BA = mul(B, A, d, r, d);
      let sum = 0;
      for (let k = 0; k < rows; k++)
        for (let a = 0; a < d; a++) {
          let e = 0;
          for (let b = 0; b < d; b++) e += (scale * (BA[a * d + b] ?? 0) - (T[a * d + b] ?? 0)) * (Xs[k * d + b] ?? 0);
          sum += e * e;
        }
      return sum / (rows * d);
    };
    // The gradient needs the inputs only through their covariance C = Xᵀ X / n.
    const C = new Float64Array(d * d);
    for (let k = 0; k < n; k++)
      for (let a = 0; a < d; a++) {
        const xa = X[k * d + a] ?? 0;
        for (let b = 0; b < d; b++) C[a * d + b] = (C[a * d + b] ?? 0) + (xa * (X[k * d + b] ?? 0)) / n;
      }
    for (let step = 0; step <= o.steps; step++) {
      if (step % 10 === 0) {
        const c = curves.get(step) ?? { loss: 0, evalLoss: 0, count: 0 };
        c.loss += lossOn(X, n);
        c.evalLoss += lossOn(Xe, m);
        c.count++;
        curves.set(step, c);
      }
      if (step === o.steps) break;
      // L = ‖X Dᵀ‖²/(n d) with D = sBA − T: ∂L/∂B = (2s/d) D C Aᵀ, ∂L/∂A = (2s/d) Bᵀ D C.
      const D = new Float64Array(d * d);
      const BA = mul(B, A, d, r, d);
      for (let i = 0; i < d * d; i++) D[i] = scale * (BA[i] ?? 0) - (T[i] ?? 0);
      const G = mul(D, C, d, d, d);
      const k = (2 * scale) / d;
      const gB = mulT(G, A, d, d, r, k); // G Aᵀ
      const gA = tMul(B, G, d, r, d, k); // Bᵀ G
      for (let i = 0; i < gB.length; i++) B[i] = (B[i] ?? 0) - o.lr * (gB[i] ?? 0);
      for (let i = 0; i < gA.length; i++) A[i] = (A[i] ?? 0) - o.lr * (gA[i] ?? 0);
    }
    modules[name] = { r, in: d, out: d, A: Float32Array.from(A), B: Float32Array.from(B), scale };
  }
  const lossCurve = [...curves.entries()].map(([step, c]) => ({ step, loss: c.loss / c.count, evalLoss: c.evalLoss / c.count }));
  return { modules, lossCurve };
}

/** [p × q] · [q × s] */
function mul(x: Float64Array, y: Float64Array, p: number, q: number, s: number): Float64Array {
  const out = new Float64Array(p * s);
  for (let i = 0; i < p; i++)
    for (let k = 0; k < q; k++) {
      const v = x[i * q + k] ?? 0;
      if (v !== 0) for (let j = 0; j < s; j++) out[i * s + j] = (out[i * s + j] ?? 0) + v * (y[k * s + j] ?? 0);
    }
  return out;
}

/** c · [p × q] · [s × q]ᵀ */
function mulT(x: Float64Array, y: Float64Array, p: number, q: number, s: number, c: number): Float64Array {
  const out = new Float64Array(p * s);
  for (let i = 0; i < p; i++)
    for (let j = 0; j < s; j++) {
      let t = 0;
      for (let k = 0; k < q; k++) t += (x[i * q + k] ?? 0) * (y[j * q + k] ?? 0);
      out[i * s + j] = c * t;
    }
  return out;
}

/** c · [q × p]ᵀ · [q × s] */
function tMul(x: Float64Array, y: Float64Array, q: number, p: number, s: number, c: number): Float64Array {
  const out = new Float64Array(p * s);
  for (let k = 0; k < q; k++)
    for (let i = 0; i < p; i++) {
      const v = x[k * p + i] ?? 0;
      if (v !== 0) for (let j = 0; j < s; j++) out[i * s + j] = (out[i * s + j] ?? 0) + c * v * (y[k * s + j] ?? 0);
    }
  return out;
}
