/**
 * Run by device-svd.test.ts in a child process whose backend is fixed (LOWRANK_BACKEND):
 * the SVDs merges and compressions use, on matrices with decaying spectra:
 * - randomized (linalg.randomizedSvd, delta.factorDense with `randomized`) on M [90, 70];
 * - exact in double (linalg.svd f64: cuSOLVER on the device for 2^16 elements or more) on a
 *   small matrix first (it stays on LAPACK: the device peak must still be 0 after it), then
 *   a wide [260, 300] and a tall [300, 260] one, factorDense's energy rule, and a ties_svd merge
 *   of two adapters whose dense delta is [300, 260].
 * Prints one JSON line: the backend, the device bytes at peak after the small SVD and at
 * the end, and the results.
 */
import { backendInfo } from '../../src/native/backend.ts';
import { type DeltaMergeOptions, factorDense, mergeDeltas } from '../../src/native/delta.ts';
import { svd as exactSvd, gemm, type Matrix, philox, randomizedSvd, type SvdResult } from '../../src/native/linalg.ts';
import { mergeAdapters } from '../../src/native/merge.ts';

const normal = (rows: number, cols: number, stream: number): Matrix => ({
  rows,
  cols,
  data: philox(11, stream, rows * cols, 'normal') as Float32Array,
});

// M [90, 70] = U diag(0.7^i) V (12 terms) + 1e-4 noise: gaps of 0.3·σ_i at every cut.
const u = normal(90, 12, 1);
const v = normal(12, 70, 2);
for (let i = 0; i < 90; i++) for (let j = 0; j < 12; j++) u.data[i * 12 + j] = (u.data[i * 12 + j] as number) * 0.7 ** j;
const m = gemm(u, v);
const noise = philox(11, 3, 90 * 70, 'normal') as Float32Array;
for (let i = 0; i < m.data.length; i++) m.data[i] = (m.data[i] as number) + 1e-4 * (noise[i] as number);

// [rows, cols] Gaussian with column j scaled by 0.98^j: distinct, decaying singular values.
function decaying(rows: number, cols: number, stream: number): Matrix {
  const x = normal(rows, cols, stream);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) x.data[i * cols + j] = (x.data[i * cols + j] as number) * 0.98 ** j;
  return x;
}
const plain = (r: SvdResult) => ({ u: Array.from(r.u.data), s: Array.from(r.s), vt: Array.from(r.vt.data) });

const small = exactSvd(decaying(10, 8, 20), { precision: 'f64' });
const peakSmall = backendInfo().deviceBytesPeak ?? 0;
const wide = exactSvd(decaying(260, 300, 21), { precision: 'f64' });
const tall = exactSvd(decaying(300, 260, 22), { precision: 'f64' });
const energy = factorDense(decaying(260, 300, 23), { energy: 0.9 });
const adapter = (stream: number) => ({
  modules: {
    'layers.0.mlp.down_proj': { r: 8, in: 260, out: 300, scale: 2, A: normal(8, 260, stream).data, B: normal(300, 8, stream + 1).data },
  },
});
const merged = await mergeAdapters([adapter(30), adapter(32)], { combination: 'ties_svd', weights: [0.6, 0.9], density: 0.5, svdRank: 6 });
const mm = merged.modules['layers.0.mlp.down_proj'];

// The dense stage of PEFT's svd-type merges (deltas, pruning, combination) at full rank, so
// the merged B A is the combined matrix itself: every combination, both sign methods,
// explicit DARE masks, the randomized SVD (the combined matrix comes back to the host), and
// integer factors whose deltas hold many equal magnitudes (the threshold falls inside a tie
// group: the lowest indices are kept).
const MOD = 'layers.1.self_attn.o_proj';
const integer = (stream: number, rows: number, cols: number): Float32Array => {
  const u = philox(11, stream, rows * cols, 'u32') as Uint32Array;
  return Float32Array.from(u, (x) => (x % 5) - 2);
};
const dense = (stream: number, ints = false) => ({
  modules: {
    [MOD]: {
      r: 4,
      in: 260,
      out: 300,
      scale: 0.5,
      A: ints ? integer(stream, 4, 260) : normal(4, 260, stream).data,
      B: ints ? integer(stream + 1, 300, 4) : normal(300, 4, stream + 1).data,
    },
  },
});
const maskBytes = (stream: number) => Uint8Array.from(philox(11, stream, 300 * 260, 'u32') as Uint32Array, (x) => (x % 3 === 0 ? 0 : 1));
const full = { svdRank: 260, seed: 77 };
const denseCases: Record<string, [ReturnType<typeof dense>[], Parameters<typeof mergeAdapters>[1]]> = {
  ties_total: [[dense(40), dense(42), dense(44)], { combination: 'ties_svd', weights: [0.5, 1, -0.7], density: 0.4, ...full }],
  ties_frequency: [
    [dense(40), dense(42), dense(44)],
    { combination: 'ties_svd', weights: [0.5, 1, 0.7], density: 0.3, majoritySignMethod: 'frequency', ...full },
  ],
  ties_integer_ties: [[dense(50, true), dense(52, true)], { combination: 'ties_svd', weights: [0.6, 0.9], density: 0.5, ...full }],
  magnitude_integer_ties: [
    [dense(54, true), dense(56, true)],
    { combination: 'magnitude_prune_svd', weights: [1, 0.5], density: 0.35, ...full },
  ],
  dare_linear: [[dense(60), dense(62)], { combination: 'dare_linear_svd', weights: [0.8, 0.4], density: 0.6, ...full }],
  dare_ties: [[dense(60), dense(62)], { combination: 'dare_ties_svd', weights: [0.8, 0.4], density: 0.6, ...full }],
  dare_explicit_masks: [
    [dense(64), dense(66)],
    {
      combination: 'dare_linear_svd',
      weights: [1, 1],
      density: 0.5,
      dareMasks: { [`${MOD}|delta|0`]: maskBytes(70), [`${MOD}|delta|1`]: maskBytes(71) },
      ...full,
    },
  ],
  randomized: [
    [dense(40), dense(42)],
    { combination: 'ties_svd', weights: [0.5, 1], density: 0.5, svdRank: 8, svdMethod: 'randomized', seed: 5 },
  ],
};
const denseMerged: Record<string, { ba: number[]; r: number; retained: number | null }> = {};
for (const [name, [inputs, options]] of Object.entries(denseCases)) {
  const res = await mergeAdapters(inputs, options);
  const m = res.modules[MOD];
  if (!m) throw new Error(`${name}: no merged module`);
  const ba = gemm({ rows: m.out, cols: m.r, data: m.B }, { rows: m.r, cols: m.in, data: m.A }, { alpha: m.scale });
  denseMerged[name] = { ba: Array.from(ba.data), r: m.r, retained: res.info[MOD]?.retainedEnergy ?? null };
}

// mergekit's delta merges (mergeDeltas) on dense [300, 260] deltas: every method, both sign
// methods, the default and forced normalisation, λ, DARE with and without the L1 rescale,
// explicit masks, and integer deltas whose magnitudes tie at the trim threshold.
const gaussian = (stream: number) => normal(300, 260, stream);
const integers = (stream: number): Matrix => ({ rows: 300, cols: 260, data: integer(stream, 300, 260) });
const deltaCases: Record<string, [Matrix[], DeltaMergeOptions]> = {
  task_arithmetic: [[gaussian(90), gaussian(91)], { method: 'task_arithmetic', weights: [0.7, 0.4], lambda: 1.5 }],
  ties_total: [[gaussian(90), gaussian(91), gaussian(92)], { method: 'ties', weights: [1, 0.5, -0.3], density: 0.3 }],
  ties_count_unnormalized: [
    [gaussian(90), gaussian(91), gaussian(92)],
    { method: 'ties', weights: [1, 0.5, 0.3], density: 0.6, signMethod: 'frequency', normalize: false },
  ],
  ties_integer_ties: [[integers(93), integers(94)], { method: 'ties', weights: [0.8, 0.6], density: 0.45 }],
  dare_linear: [[gaussian(95), gaussian(96)], { method: 'dare_linear', weights: [0.5, 0.5], density: 0.4, seed: 3, module: MOD }],
  dare_linear_no_rescale: [
    [gaussian(95), gaussian(96)],
    { method: 'dare_linear', weights: [0.5, 0.5], density: 0.4, seed: 3, module: MOD, rescale: false, normalize: true },
  ],
  dare_ties: [[gaussian(95), gaussian(96)], { method: 'dare_ties', weights: [0.9, 0.6], density: 0.5, seed: 4, module: MOD }],
  dare_masks: [[gaussian(97), gaussian(98)], { method: 'dare_ties', weights: [1, 1], density: 0.5, masks: [maskBytes(72), maskBytes(73)] }],
};
const deltaMixes: Record<string, number[]> = {};
for (const [name, [deltas, options]] of Object.entries(deltaCases)) deltaMixes[name] = Array.from(mergeDeltas(deltas, options).data);

const svd = randomizedSvd(m, { rank: 6, oversample: 4, niter: 2, seed: 5 });
const factor = factorDense(m, { rank: 5, randomized: true, oversample: 6, niter: 3, seed: 9, purpose: 'rsvd:test' });
const info = backendInfo();
console.log(
  JSON.stringify({
    backend: info.backend,
    peak: info.deviceBytesPeak ?? 0,
    peakSmall,
    svdInfo: info.svd ?? null,
    exact: {
      small: plain(small),
      wide: plain(wide),
      tall: plain(tall),
      energy: { A: Array.from(energy.module.A), B: Array.from(energy.module.B), sigma: Array.from(energy.sigma), r: energy.module.r },
      dense: denseMerged,
      deltaMixes,
      merge: {
        A: Array.from(mm?.A ?? []),
        B: Array.from(mm?.B ?? []),
        r: mm?.r,
        retained: merged.info['layers.0.mlp.down_proj']?.retainedEnergy,
      },
    },
    m: Array.from(m.data),
    svd: { u: Array.from(svd.u.data), s: Array.from(svd.s), vt: Array.from(svd.vt.data) },
    factor: { A: Array.from(factor.module.A), B: Array.from(factor.module.B), sigma: Array.from(factor.sigma) },
  }),
);
