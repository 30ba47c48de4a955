/**
 * Run by device-svd.test.ts in a child process whose backend is fixed (LOWRANK_BACKEND):
 * the randomized SVDs merges and compressions use (linalg.randomizedSvd, delta.factorDense
 * with `randomized`), on one matrix with a decaying spectrum. Prints one JSON line: the
 * backend, the device bytes at peak (> 0 only when the products ran on the device), and
 * the results.
 */
import { backendInfo } from '../../src/native/backend.ts';
import { factorDense } from '../../src/native/delta.ts';
import { gemm, type Matrix, philox, randomizedSvd } from '../../src/native/linalg.ts';

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

const svd = randomizedSvd(m, { rank: 6, oversample: 4, niter: 2, seed: 5 });
const factor = factorDense(m, { rank: 5, randomized: true, oversample: 6, niter: 3, seed: 9, purpose: 'rsvd:test' });
const info = backendInfo();
console.log(
  JSON.stringify({
    backend: info.backend,
    peak: info.deviceBytesPeak ?? 0,
    m: Array.from(m.data),
    svd: { u: Array.from(svd.u.data), s: Array.from(svd.s), vt: Array.from(svd.vt.data) },
    factor: { A: Array.from(factor.module.A), B: Array.from(factor.module.B), sigma: Array.from(factor.sigma) },
  }),
);
