/**
 * The backward and training-step cases of the cross-backend suite (backend-cases.ts has
 * the conventions): RMSNorm/SwiGLU/attention backward, the fused cross-entropy, and the
 * Philox dropout masks, which must be the same bytes on every backend (tolerance 0).
 */
import { philox } from '../../src/native/linalg.ts';
import { type BackendCase, rand } from './backend-case.ts';
import { at } from './python-ref.ts';

function rmsnormBackwardCase(): BackendCase {
  const n = 7;
  const d = 300;
  const x = rand(81, n * d, 2);
  const w = rand(82, d);
  const rstd = Float32Array.from({ length: n }, (_, i) => {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += at(x, i * d + j) ** 2;
    return 1 / Math.sqrt(ss / d + 1e-6);
  });
  const args = { n, d, x, w, rstd, dy: rand(83, n * d), dx: rand(84, n * d), accumulate: true };
  return {
    name: 'rmsnorm backward (accumulating)',
    run: (ops, be) => ops.rmsnormBackward(be, args),
    reference() {
      const dx = Float64Array.from(args.dx);
      for (let i = 0; i < n; i++) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += at(w, j) * at(args.dy, i * d + j) * at(x, i * d + j);
        const r = at(rstd, i);
        for (let j = 0; j < d; j++)
          dx[i * d + j] = at(dx, i * d + j) + r * at(w, j) * at(args.dy, i * d + j) - (at(x, i * d + j) * r ** 3 * dot) / d;
      }
      return { dx };
    },
    tolerance: 1e-6,
  };
}

function swigluBackwardCase(): BackendCase {
  const args = { n: 1000, gate: rand(91, 1000, 4), up: rand(92, 1000), dact: rand(93, 1000) };
  return {
    name: 'swiglu backward',
    run: (ops, be) => ops.swigluBackward(be, args),
    reference() {
      const sg = (g: number) => 1 / (1 + Math.exp(-g));
      return {
        dgate: Float64Array.from(args.gate, (g, i) => at(args.dact, i) * at(args.up, i) * sg(g) * (1 + g * (1 - sg(g)))),
        dup: Float64Array.from(args.gate, (g, i) => at(args.dact, i) * g * sg(g)),
      };
    },
    tolerance: 1e-6,
  };
}

function crossEntropyCase(): BackendCase {
  const n = 6;
  const vocab = 1000; // wider than a block: the GPU walks rows with a stride
  const args = { n, vocab, logits: rand(101, n * vocab, 8), labels: Int32Array.of(3, -100, 999, 0, 512, -100), scale: 0.25 };
  return {
    name: 'cross-entropy loss and softmax backward (ignored labels)',
    run: (ops, be) => ops.crossEntropy(be, args),
    reference() {
      const loss = new Float64Array(n);
      const dlogits = new Float64Array(n * vocab);
      for (let i = 0; i < n; i++) {
        const y = at(args.labels, i);
        if (y === -100) continue;
        const z = Array.from(args.logits.subarray(i * vocab, (i + 1) * vocab));
        const mx = Math.max(...z);
        const lse = mx + Math.log(z.reduce((s, v) => s + Math.exp(v - mx), 0));
        loss[i] = lse - at(z, y);
        for (let j = 0; j < vocab; j++) dlogits[i * vocab + j] = (Math.exp(at(z, j) - lse) - (j === y ? 1 : 0)) * args.scale;
      }
      return { loss, dlogits };
    },
    tolerance: 1e-5,
  };
}

/** Dropout masks must be the same bytes everywhere (METHODS §8.2): tolerance 0. */
function dropoutCase(): BackendCase {
  const args = { seed: 0x1234_5678_9abcn, stream: 0xfedc_ba98_7654_3210n, offset: 3, n: 1001, p: 0.3 };
  return {
    name: 'dropout mask from Philox (odd offset and length)',
    run: (ops, be) => ops.dropoutMask(be, args),
    reference() {
      const words = philox(args.seed, args.stream, args.n, 'u32', args.offset);
      const keep = Math.fround(1 / Math.fround(1 - Math.fround(args.p)));
      return { mask: Float32Array.from(words, (w) => ((w >>> 8) * 2 ** -24 >= Math.fround(args.p) ? keep : 0)) };
    },
    tolerance: 0,
  };
}

/** fp64 attention backward by finite algebra on the recomputed P (the CPU op's formula). */
function attentionBackwardCase(): BackendCase {
  const T = 21;
  const heads = 4;
  const kvHeads = 2;
  const headDim = 8;
  const qd = heads * headDim;
  const kvd = kvHeads * headDim;
  const args = {
    T,
    heads,
    kvHeads,
    headDim,
    q: rand(111, T * qd),
    k: rand(112, T * kvd),
    v: rand(113, T * kvd),
    dout: rand(114, T * qd),
  };
  return {
    name: 'causal GQA attention backward',
    run: (ops, be) => ops.attentionBackward(be, args),
    reference() {
      const dq = new Float64Array(T * qd);
      const dk = new Float64Array(T * kvd);
      const dv = new Float64Array(T * kvd);
      const s = 1 / Math.sqrt(headDim);
      for (let h = 0; h < heads; h++) {
        const g = Math.floor(h / (heads / kvHeads));
        const qv = (i: number, e: number) => at(args.q, i * qd + h * headDim + e);
        const kv = (j: number, e: number) => at(args.k, j * kvd + g * headDim + e);
        const vv = (j: number, e: number) => at(args.v, j * kvd + g * headDim + e);
        const dov = (i: number, e: number) => at(args.dout, i * qd + h * headDim + e);
        for (let i = 0; i < T; i++) {
          const sc = Array.from({ length: i + 1 }, (_, j) => {
            let d = 0;
            for (let e = 0; e < headDim; e++) d += qv(i, e) * kv(j, e);
            return d * s;
          });
          const mx = Math.max(...sc);
          const ex = sc.map((x) => Math.exp(x - mx));
          const sum = ex.reduce((a, b) => a + b, 0);
          const p = ex.map((x) => x / sum);
          const dp = p.map((_, j) => {
            let d = 0;
            for (let e = 0; e < headDim; e++) d += dov(i, e) * vv(j, e);
            return d;
          });
          const dot = p.reduce((a, pj, j) => a + pj * at(dp, j), 0);
          for (let j = 0; j <= i; j++) {
            const pj = at(p, j);
            const ds = pj * (at(dp, j) - dot);
            for (let e = 0; e < headDim; e++) {
              dq[i * qd + h * headDim + e] = at(dq, i * qd + h * headDim + e) + s * ds * kv(j, e);
              dk[j * kvd + g * headDim + e] = at(dk, j * kvd + g * headDim + e) + s * ds * qv(i, e);
              dv[j * kvd + g * headDim + e] = at(dv, j * kvd + g * headDim + e) + pj * dov(i, e);
            }
          }
        }
      }
      return { dq, dk, dv };
    },
    tolerance: 2e-5,
  };
}

export const TRAIN_STEP_CASES: BackendCase[] = [
  rmsnormBackwardCase(),
  swigluBackwardCase(),
  crossEntropyCase(),
  dropoutCase(),
  attentionBackwardCase(),
];
