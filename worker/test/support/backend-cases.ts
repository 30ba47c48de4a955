/**
 * The test vectors both compute backends run (backend_ops.h), each with a plain fp64
 * reference written here (row-major loops, no native call) and its METHODS §8.1 tolerance:
 * the CPU half is checked against the reference, the CUDA half against the CPU half.
 * Shapes are odd on purpose, so the GPU GEMM's 64×64 tiles and 16-deep slices have edges.
 */
import type { BackendOps } from '../../src/native/backend.ts';
import { type Arrays, type BackendCase, rand } from './backend-case.ts';
import { TRAIN_STEP_CASES } from './backend-cases-train.ts';
import { at } from './python-ref.ts';

export type { Arrays, BackendCase };

/** Rounds fp32 values to bf16 (nearest even) and returns the raw bits. */
export function toBf16Bits(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  return Uint16Array.from(u, (b) => ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff);
}

export function fromBf16Bits(bits: Uint16Array): Float32Array {
  return new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer);
}

/** C [m, n] = op(A) op(B) in fp64 (row-major, cblas semantics). */
function mm(a: ArrayLike<number>, ta: boolean, b: ArrayLike<number>, tb: boolean, m: number, n: number, k: number) {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += at(a, ta ? p * m + i : i * k + p) * at(b, tb ? j * k + p : p * n + j);
      c[i * n + j] = s;
    }
  return c;
}

const add = (x: ArrayLike<number>, y: ArrayLike<number>, s = 1) => Float64Array.from(x, (v, i) => v + s * at(y, i));

interface LoraShape {
  n: number;
  in: number;
  out: number;
  r: number;
  scale: number;
  bf16?: boolean;
}

function loraInputs(sh: LoraShape, seed: number) {
  const w32 = rand(seed + 1, sh.out * sh.in, 0.3);
  const w = sh.bf16 ? toBf16Bits(w32) : w32;
  const wRef = sh.bf16 ? fromBf16Bits(toBf16Bits(w32)) : w32;
  return {
    args: { ...sh, x: rand(seed, sh.n * sh.in), w, a: rand(seed + 2, sh.r * sh.in, 0.2), b: rand(seed + 3, sh.out * sh.r, 0.2) },
    wRef,
    w32,
  };
}

/** y = x Wᵀ + s (x Aᵀ) Bᵀ in fp64 for a given W. */
export function loraForwardRef(
  a: { n: number; in: number; out: number; r: number; scale: number; x: Float32Array; a: Float32Array; b: Float32Array },
  w: ArrayLike<number>,
) {
  const h = mm(a.x, false, a.a, true, a.n, a.r, a.in);
  return { y: add(mm(a.x, false, w, true, a.n, a.out, a.in), mm(h, false, a.b, true, a.n, a.out, a.r), a.scale), h };
}

function loraForwardCase(name: string, sh: LoraShape, seed: number): BackendCase {
  const { args, wRef } = loraInputs(sh, seed);
  return {
    name,
    run: (ops, be) => ops.loraForward(be, args),
    reference: () => (sh.r > 0 ? loraForwardRef(args, wRef) : { y: loraForwardRef(args, wRef).y }),
    tolerance: 1e-5,
  };
}

function loraBackwardCase(name: string, sh: LoraShape, seed: number): BackendCase {
  const { args, wRef } = loraInputs(sh, seed);
  const full = {
    ...args,
    h: rand(seed + 4, sh.n * sh.r),
    dy: rand(seed + 5, sh.n * sh.out),
    ga: rand(seed + 6, sh.r * sh.in, 0.1), // nonzero: the op accumulates
    gb: rand(seed + 7, sh.out * sh.r, 0.1),
  };
  return {
    name,
    run: (ops, be) => ops.loraBackward(be, full),
    reference() {
      const { n, in: k, out, r, scale } = full;
      const g = mm(full.dy, false, full.b, false, n, r, out);
      return {
        dx: add(mm(full.dy, false, wRef, false, n, k, out), mm(g, false, full.a, false, n, k, r), scale),
        ga: add(full.ga, mm(g, true, full.x, false, r, k, n), scale),
        gb: add(full.gb, mm(full.dy, true, full.h, false, out, r, n), scale),
      };
    },
    tolerance: 2e-5,
  };
}

function adamwCase(step: number, weightDecay: number): BackendCase {
  const n = 1000;
  const args = {
    n,
    p: rand(11, n),
    g: rand(12, n, 0.1),
    m: rand(13, n, 0.01),
    v: Float32Array.from(rand(14, n, 0.01), (x) => x * x),
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay,
    step,
  };
  return {
    name: `adamw (step ${step}, weight decay ${weightDecay})`,
    run: (ops, be) => ops.adamw(be, args),
    reference() {
      const bc1 = 1 - args.beta1 ** step;
      const bc2 = 1 - args.beta2 ** step;
      const p = new Float64Array(n);
      const m = new Float64Array(n);
      const v = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const g = at(args.g, i);
        m[i] = args.beta1 * at(args.m, i) + (1 - args.beta1) * g;
        v[i] = args.beta2 * at(args.v, i) + (1 - args.beta2) * g * g;
        const denom = Math.sqrt(at(v, i)) / Math.sqrt(bc2) + args.eps;
        p[i] = at(args.p, i) * (1 - args.lr * weightDecay) - ((args.lr / bc1) * at(m, i)) / denom;
      }
      return { p, m, v };
    },
    tolerance: 1e-6,
  };
}

function rmsnormCase(): BackendCase {
  const args = { n: 9, d: 300, eps: 1e-6, x: rand(21, 9 * 300, 2), w: rand(22, 300) };
  return {
    name: 'rmsnorm',
    run: (ops, be) => ops.rmsnorm(be, args),
    reference() {
      const y = new Float64Array(args.n * args.d);
      const rstd = new Float64Array(args.n);
      for (let i = 0; i < args.n; i++) {
        let ss = 0;
        for (let j = 0; j < args.d; j++) ss += at(args.x, i * args.d + j) ** 2;
        rstd[i] = 1 / Math.sqrt(ss / args.d + args.eps);
        for (let j = 0; j < args.d; j++) y[i * args.d + j] = at(args.w, j) * at(args.x, i * args.d + j) * at(rstd, i);
      }
      return { y, rstd };
    },
    tolerance: 1e-6,
  };
}

function ropeCase(inverse: boolean): BackendCase {
  const n = 10;
  const heads = 3;
  const headDim = 8;
  const npos = 16;
  const half = headDim / 2;
  const ang = Float64Array.from({ length: npos * half }, (_, t) => Math.floor(t / half) / 10000 ** ((2 * (t % half)) / headDim));
  const args = {
    n,
    heads,
    headDim,
    npos,
    inverse,
    x: rand(31, n * heads * headDim),
    pos: Int32Array.from({ length: n }, (_, i) => (i * 7) % npos),
    cos: Float32Array.from(ang, Math.cos),
    sin: Float32Array.from(ang, Math.sin),
  };
  return {
    name: `rope (${inverse ? 'inverse' : 'forward'})`,
    run: (ops, be) => ops.rope(be, args),
    reference() {
      const x = Float64Array.from(args.x);
      for (let r = 0; r < n; r++)
        for (let h = 0; h < heads; h++)
          for (let i = 0; i < half; i++) {
            const o = r * heads * headDim + h * headDim;
            const c = at(args.cos, at(args.pos, r) * half + i);
            const s = (inverse ? -1 : 1) * at(args.sin, at(args.pos, r) * half + i);
            const x1 = at(args.x, o + i);
            const x2 = at(args.x, o + i + half);
            x[o + i] = x1 * c - x2 * s;
            x[o + i + half] = x2 * c + x1 * s;
          }
      return { x };
    },
    tolerance: 1e-6,
  };
}

function swigluCase(): BackendCase {
  const args = { n: 1000, gate: rand(41, 1000, 4), up: rand(42, 1000) };
  return {
    name: 'swiglu',
    run: (ops, be) => ops.swiglu(be, args),
    reference: () => ({ act: Float64Array.from(args.gate, (g, i) => (g / (1 + Math.exp(-g))) * at(args.up, i)) }),
    tolerance: 1e-6,
  };
}

function attentionCase(): BackendCase {
  const T = 33;
  const heads = 4;
  const kvHeads = 2;
  const headDim = 16;
  const args = {
    T,
    heads,
    kvHeads,
    headDim,
    q: rand(51, T * heads * headDim),
    k: rand(52, T * kvHeads * headDim),
    v: rand(53, T * kvHeads * headDim),
  };
  return {
    name: 'causal GQA attention',
    run: (ops, be) => ops.attention(be, args),
    reference() {
      const out = new Float64Array(T * heads * headDim);
      const qd = heads * headDim;
      const kvd = kvHeads * headDim;
      for (let h = 0; h < heads; h++) {
        const kh = Math.floor(h / (heads / kvHeads));
        for (let i = 0; i < T; i++) {
          const s = new Float64Array(i + 1);
          for (let j = 0; j <= i; j++) {
            let d = 0;
            for (let e = 0; e < headDim; e++) d += at(args.q, i * qd + h * headDim + e) * at(args.k, j * kvd + kh * headDim + e);
            s[j] = d / Math.sqrt(headDim);
          }
          const mx = Math.max(...s);
          const p = s.map((v) => Math.exp(v - mx));
          const sum = p.reduce((a, b) => a + b, 0);
          for (let e = 0; e < headDim; e++) {
            let o = 0;
            for (let j = 0; j <= i; j++) o += (at(p, j) / sum) * at(args.v, j * kvd + kh * headDim + e);
            out[i * qd + h * headDim + e] = o;
          }
        }
      }
      return { out };
    },
    tolerance: 1e-5,
  };
}

function factorSumCase(): BackendCase {
  const out = 40;
  const inn = 50;
  const terms = [4, 0, 7].map((r, i) => ({ r, a: rand(61 + i, r * inn), b: rand(71 + i, out * r), weight: [0.5, 2, -1.25][i] ?? 1 }));
  const args = { out, in: inn, terms };
  return {
    name: 'weighted factor sum (merge)',
    run: (ops, be) => ops.factorSum(be, args),
    reference() {
      let delta = new Float64Array(out * inn);
      for (const t of terms) delta = add(delta, mm(t.b, false, t.a, false, out, inn, t.r), t.weight);
      return { delta };
    },
    tolerance: 1e-5,
  };
}

export const BACKEND_CASES: BackendCase[] = [
  loraForwardCase('lora forward fp32 (37×70 → 53, r 6)', { n: 37, in: 70, out: 53, r: 6, scale: 1.5 }, 1),
  loraForwardCase('lora forward fp32, several tiles (130×96 → 80, r 8)', { n: 130, in: 96, out: 80, r: 8, scale: 2 }, 2),
  loraForwardCase('lora forward bf16 W (37×70 → 53, r 6)', { n: 37, in: 70, out: 53, r: 6, scale: 1.5, bf16: true }, 3),
  loraForwardCase('plain linear, r 0', { n: 5, in: 17, out: 9, r: 0, scale: 1 }, 4),
  loraBackwardCase('lora backward fp32 (37×70 → 53, r 6)', { n: 37, in: 70, out: 53, r: 6, scale: 1.5 }, 5),
  loraBackwardCase('lora backward bf16 W (70×65 → 66, r 5)', { n: 70, in: 65, out: 66, r: 5, scale: 0.5, bf16: true }, 6),
  adamwCase(1, 0),
  adamwCase(7, 0.01),
  rmsnormCase(),
  ropeCase(false),
  ropeCase(true),
  swigluCase(),
  attentionCase(),
  factorSumCase(),
  ...TRAIN_STEP_CASES,
];

/** The bf16 check against the unrounded weights (§8.1 bf16 paths: rel ≤ 1e-2). */
export function bf16VersusFp32(): { args: Parameters<BackendOps['loraForward']>[1]; fp32: ReturnType<typeof loraForwardRef> } {
  const { args, w32 } = loraInputs({ n: 37, in: 70, out: 53, r: 6, scale: 1.5, bf16: true }, 3);
  return { args, fp32: loraForwardRef(args, w32) };
}
