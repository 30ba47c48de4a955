/**
 * The native linear algebra against PyTorch (torch.linalg.svd / qr, fp32) on the same
 * inputs, at the tolerances of METHODS §8.1, plus invariants checked in fp64 here:
 *   SVD σ: |σ_i − σ̂_i| ≤ 1e-5·σ_1; singular vectors after the sign rule |⟨u_i, û_i⟩| ≥ 1 − 1e-5
 *     when the gap (σ_i − σ_{i+1})/σ_1 ≥ 1e-3, otherwise cluster projectors rel ≤ 1e-4;
 *   QR: ‖QR − M‖/‖M‖ ≤ 1e-6, max|QᵀQ − I| ≤ 1e-6·√k, and Q, R vs torch (diag(R) ≥ 0) rel ≤ 1e-5;
 *   factored SVD of s·BA vs dense torch SVD: σ as above, reconstruction rel ≤ 1e-5;
 *   randomized SVD vs exact: σ rel ≤ 1e-3, error ≤ (1 + 1e-3)·optimal; same seed ⇒ same bytes;
 *   GEMM vs an fp64 loop: rel ≤ 1e-5.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LowrankError } from '@lowrank/crds/errors';
import {
  dareMask,
  factoredSvd,
  gemm,
  innerProduct,
  type LoraModule,
  type Matrix,
  philox,
  qr,
  randomizedSvd,
  refactor,
  type SvdResult,
  spectra,
  streamId,
  svd,
} from '../src/native/linalg.ts';
import { norm, rel } from './support/numeric.ts';
import { at, type Entry, loadF32, readJson, runPython, saveF32, writeJson } from './support/python-ref.ts';

const gaussian = (rows: number, cols: number, stream: number): Matrix => ({
  rows,
  cols,
  data: Float32Array.from(philox(2026, stream, rows * cols, 'normal')),
});

/** fp64 op(a) op(b). */
function mm(a: Matrix, b: Matrix, ta = false, tb = false): Float64Array {
  const m = ta ? a.cols : a.rows;
  const k = ta ? a.rows : a.cols;
  const n = tb ? b.rows : b.cols;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += at(a.data, ta ? p * a.cols + i : i * a.cols + p) * at(b.data, tb ? j * b.cols + p : p * b.cols + j);
      out[i * n + j] = s;
    }
  return out;
}

function reconstruct(s: SvdResult): Float64Array {
  const us: Matrix = { rows: s.u.rows, cols: s.u.cols, data: s.u.data.map((v, i) => v * at(s.s, i % s.u.cols)) };
  return mm(us, s.vt);
}

/** Flips torch's (u_i, v_i) to our sign rule: largest-|.| entry of u_i positive, lowest index on ties. */
function signRule(s: SvdResult): SvdResult {
  const u = Float32Array.from(s.u.data);
  const vt = Float32Array.from(s.vt.data);
  for (let i = 0; i < s.u.cols; i++) {
    let best = 0;
    for (let j = 1; j < s.u.rows; j++) if (Math.abs(at(u, j * s.u.cols + i)) > Math.abs(at(u, best * s.u.cols + i))) best = j;
    if (at(u, best * s.u.cols + i) >= 0) continue;
    for (let j = 0; j < s.u.rows; j++) u[j * s.u.cols + i] = -at(u, j * s.u.cols + i);
    for (let j = 0; j < s.vt.cols; j++) vt[i * s.vt.cols + j] = -at(vt, i * s.vt.cols + j);
  }
  return { u: { ...s.u, data: u }, s: s.s, vt: { ...s.vt, data: vt } };
}

const column = (m: Matrix, i: number) => Float64Array.from({ length: m.rows }, (_, j) => at(m.data, j * m.cols + i));
const dot = (x: Float64Array, y: Float64Array) => x.reduce((s, v, i) => s + v * at(y, i), 0);

/** Projector U_S U_Sᵀ of the columns in S. */
function projector(u: Matrix, cols: number[]): Float64Array {
  const p = new Float64Array(u.rows * u.rows);
  for (const c of cols) {
    const x = column(u, c);
    for (let i = 0; i < u.rows; i++) for (let j = 0; j < u.rows; j++) p[i * u.rows + j] = at(p, i * u.rows + j) + at(x, i) * at(x, j);
  }
  return p;
}

/** METHODS §8.1 singular-value and singular-vector checks of ours against a reference. */
function assertSvdClose(ours: SvdResult, ref: SvdResult, what: string): void {
  const k = ours.s.length;
  assert.equal(k, ref.s.length, `${what}: number of singular values`);
  const s1 = at(ref.s, 0);
  for (let i = 0; i < k; i++) assert.ok(Math.abs(at(ours.s, i) - at(ref.s, i)) <= 1e-5 * s1, `${what}: σ_${i} ${ours.s[i]} vs ${ref.s[i]}`);
  const r = signRule(ref);
  let start = 0;
  for (let i = 0; i < k; i++) {
    const gapAfter = i + 1 < k ? (at(ref.s, i) - at(ref.s, i + 1)) / s1 : 1;
    if (gapAfter < 1e-3) continue; // the cluster start..i ends where the gap opens
    const cluster = Array.from({ length: i - start + 1 }, (_, j) => start + j);
    if (cluster.length === 1) {
      const c = Math.abs(dot(column(ours.u, i), column(r.u, i)));
      assert.ok(c >= 1 - 1e-5, `${what}: |⟨u_${i}, û_${i}⟩| = ${c}`);
    } else {
      const e = rel(projector(ours.u, cluster), projector(r.u, cluster));
      assert.ok(e <= 1e-4, `${what}: projector of σ_${start}..σ_${i} rel ${e}`);
    }
    start = i + 1;
  }
}

/** M = Q1 diag(σ) Q2ᵀ with a prescribed spectrum (a repeated value makes a cluster). */
function withSpectrum(rows: number, cols: number, sigma: number[], stream: number): Matrix {
  const q1 = qr(gaussian(rows, sigma.length, stream)).q;
  const q2 = qr(gaussian(cols, sigma.length, stream + 1)).q;
  const scaled: Matrix = { ...q1, data: q1.data.map((v, i) => v * at(sigma, i % sigma.length)) };
  return gemm(scaled, q2, { transB: true });
}

const work = mkdtempSync(join(tmpdir(), 'lowrank-linalg-'));
after(() => rmSync(work, { recursive: true, force: true }));

const module = (r: number, inDim: number, out: number, scale: number, stream: number): LoraModule => ({
  r,
  in: inDim,
  out,
  scale,
  A: gaussian(r, inDim, stream).data,
  B: gaussian(out, r, stream + 1).data,
});

describe('linalg parity with torch.linalg', () => {
  const dense: Record<string, Matrix> = {
    tall: gaussian(96, 24, 1),
    wide: gaussian(20, 70, 2),
    square: gaussian(48, 48, 3),
    cluster: withSpectrum(40, 30, [5, 3, 3, 3, 1, 0.5, 0.5, ...Array.from({ length: 23 }, (_, i) => 0.4 * 0.9 ** i)], 4), // full rank
  };
  const factored: Record<string, LoraModule> = {
    r8: module(8, 72, 40, 16 / 8, 10),
    rslora: module(6, 30, 50, 8 / Math.sqrt(6), 12),
    wideRank: module(16, 12, 10, 0.5, 14), // r > in, out
  };
  const cases: unknown[] = [];
  for (const [id, m] of Object.entries(dense)) {
    const e = saveF32(work, `${id}.m`, m.data, [m.rows, m.cols]);
    cases.push({ id: `svd-${id}`, op: 'svd', m: e }, { id: `qr-${id}`, op: 'qr', m: e });
  }
  for (const [id, m] of Object.entries(factored)) {
    cases.push({
      id: `fsvd-${id}`,
      op: 'delta_svd',
      A: saveF32(work, `${id}.A`, m.A, [m.r, m.in]),
      B: saveF32(work, `${id}.B`, m.B, [m.out, m.r]),
      scale: m.scale,
    });
  }
  writeJson(work, 'cases.json', { cases });
  let results: Map<string, Record<string, Entry>> | undefined;
  const ref = (id: string): Record<string, Entry> => {
    if (!results) {
      runPython('torch_linalg_ref.py', work);
      const out = readJson(work, 'results.json') as { results: Array<Record<string, Entry> & { id: string }> };
      results = new Map(out.results.map((r) => [r.id, r]));
    }
    const r = results.get(id);
    assert.ok(r, `no torch result for ${id}`);
    return r;
  };
  const entry = (e: Entry | undefined): Entry => {
    assert.ok(e, 'missing torch output');
    return e;
  };
  const mat = (e: Entry | undefined): Matrix => {
    assert.ok(e);
    return { rows: at(e.shape, 0), cols: at(e.shape, 1), data: loadF32(work, e) };
  };
  const torchSvd = (id: string): SvdResult => {
    const r = ref(id);
    return { u: mat(r.u), s: loadF32(work, entry(r.s)), vt: mat(r.vt) };
  };

  for (const [id, m] of Object.entries(dense)) {
    it(`svd of ${id} [${m.rows}, ${m.cols}] matches torch (σ, vectors/projectors) and reconstructs`, () => {
      const ours = svd(m);
      assertSvdClose(ours, torchSvd(`svd-${id}`), id);
      assert.ok(rel(reconstruct(ours), m.data) <= 1e-6);
      // computed in double (the exact inits' path), rounded to fp32: the same checks
      const ours64 = svd(m, { precision: 'f64' });
      assertSvdClose(ours64, torchSvd(`svd-${id}`), `${id} (f64)`);
      assert.ok(rel(reconstruct(ours64), m.data) <= 1e-6);
    });

    it(`qr of ${id} matches torch and is orthonormal with diag(R) ≥ 0`, () => {
      const { q, r } = qr(m);
      const k = Math.min(m.rows, m.cols);
      assert.ok(rel(mm(q, r), m.data) <= 1e-6);
      const g = mm(q, q, true);
      for (let i = 0; i < k; i++)
        for (let j = 0; j < k; j++) assert.ok(Math.abs(at(g, i * k + j) - (i === j ? 1 : 0)) <= 1e-6 * Math.sqrt(k));
      for (let i = 0; i < k; i++) assert.ok(at(r.data, i * r.cols + i) >= 0);
      const t = ref(`qr-${id}`);
      assert.ok(rel(q.data, loadF32(work, entry(t.q))) <= 1e-5, 'Q vs torch');
      assert.ok(rel(r.data, loadF32(work, entry(t.r))) <= 1e-5, 'R vs torch');
    });
  }

  for (const [id, m] of Object.entries(factored)) {
    it(`factoredSvd of s·BA (${id}: r=${m.r}, [${m.out}, ${m.in}]) matches torch's dense SVD`, () => {
      const ours = factoredSvd(m);
      const t = torchSvd(`fsvd-${id}`);
      const k = ours.s.length;
      assert.equal(k, Math.min(m.r, m.in, m.out));
      const top: SvdResult = {
        u: {
          rows: t.u.rows,
          cols: k,
          data: Float32Array.from({ length: t.u.rows * k }, (_, i) => at(t.u.data, Math.floor(i / k) * t.u.cols + (i % k))),
        },
        s: t.s.slice(0, k),
        vt: { rows: k, cols: t.vt.cols, data: t.vt.data.slice(0, k * t.vt.cols) },
      };
      assertSvdClose(ours, top, id);
      const delta = mm({ rows: m.out, cols: m.r, data: m.B }, { rows: m.r, cols: m.in, data: m.A }).map((v) => v * m.scale);
      assert.ok(rel(reconstruct(ours), delta) <= 1e-5);
      for (let i = k; i < t.s.length; i++) assert.ok(at(t.s, i) <= 1e-5 * at(t.s, 0), 'torch sees no rank beyond r');
    });
  }
});

describe('randomized SVD', () => {
  const m = withSpectrum(200, 120, [50, 40, 30, 20, 15, 10, 8, 6, 4, 3, 0.3, 0.2, 0.1, 0.05, 0.01], 20);
  it('is within (1 + 1e-3) of the optimal rank-k error, σ rel ≤ 1e-3, deterministic per seed', () => {
    const exact = svd(m);
    const k = 10;
    const a = randomizedSvd(m, { rank: k, seed: 7n, stream: streamId('rsvd:test') });
    const b = randomizedSvd(m, { rank: k, seed: 7n, stream: streamId('rsvd:test') });
    assert.deepEqual(a.u.data, b.u.data);
    assert.deepEqual(a.s, b.s);
    const c = randomizedSvd(m, { rank: k, seed: 8n, stream: streamId('rsvd:test') });
    assert.notDeepEqual(a.u.data, c.u.data);
    for (let i = 0; i < k; i++) assert.ok(Math.abs(at(a.s, i) - at(exact.s, i)) <= 1e-3 * at(exact.s, i));
    const opt = Math.sqrt(Array.from(exact.s.slice(k)).reduce((s, v) => s + v * v, 0));
    const err = norm(reconstruct(a).map((v, i) => v - at(m.data, i)));
    assert.ok(err <= (1 + 1e-3) * opt + 1e-6 * at(exact.s, 0), `error ${err} vs optimal ${opt}`);
  });
});

describe('gemm, refactor, inner products, spectra', () => {
  it('gemm handles transposes, alpha and beta (rel ≤ 1e-5 vs fp64)', () => {
    const a = gaussian(30, 20, 30);
    const b = gaussian(25, 30, 31);
    const c = gaussian(20, 25, 32);
    const out = gemm(a, b, { transA: true, transB: true, alpha: 0.5, beta: -2, c });
    const ref = mm(a, b, true, true).map((v, i) => 0.5 * v - 2 * at(c.data, i));
    assert.ok(rel(out.data, ref) <= 1e-5);
    assert.throws(() => gemm(a, b), TypeError);
  });

  it('refactor keeps the product (rel ≤ 1e-5) and balances ‖b_i‖ = ‖a_i‖', () => {
    const m = module(6, 40, 30, 3, 40);
    const delta = mm({ rows: m.out, cols: m.r, data: m.B }, { rows: m.r, cols: m.in, data: m.A }).map((v) => v * m.scale);
    for (const split of ['balanced', 'b_heavy'] as const) {
      const f = refactor(m, 4, { split, targetScale: 0.5 });
      assert.equal(f.r, 4);
      const full = refactor(m, 8, { split });
      const d = mm({ rows: full.out, cols: 8, data: full.B }, { rows: 8, cols: full.in, data: full.A });
      assert.ok(rel(d, delta) <= 1e-5, split);
    }
  });

  it('innerProduct equals the dense Frobenius product', () => {
    const x = module(4, 30, 20, 2, 50);
    const y = module(7, 30, 20, -0.5, 52);
    const dx = mm({ rows: 20, cols: 4, data: x.B }, { rows: 4, cols: 30, data: x.A }).map((v) => v * x.scale);
    const dy = mm({ rows: 20, cols: 7, data: y.B }, { rows: 7, cols: 30, data: y.A }).map((v) => v * y.scale);
    assert.ok(Math.abs(innerProduct(x, y) - dot(dx, dy)) <= 1e-5 * norm(dx) * norm(dy));
  });

  it('spectra follow METHODS §6 from the singular values', () => {
    const m = module(8, 50, 40, 2, 60);
    const s = spectra(m);
    const sig = Array.from(factoredSvd(m).s);
    const sumsq = sig.reduce((a, v) => a + v * v, 0);
    assert.ok(Math.abs(s.fro - Math.sqrt(sumsq)) <= 1e-6 * s.fro);
    assert.equal(s.spec, sig[0]);
    assert.ok(Math.abs(s.srank - sumsq / at(sig, 0) ** 2) <= 1e-6 * s.srank);
    const kAt = (tau: number) => {
      let run = 0;
      for (let k = 0; k < sig.length; k++) {
        run += at(sig, k) ** 2;
        if (run / sumsq >= tau) return k + 1;
      }
      return sig.length;
    };
    assert.deepEqual(s.kAt, { '0.5': kAt(0.5), '0.9': kAt(0.9), '0.95': kAt(0.95), '0.99': kAt(0.99) });
    assert.equal(s.nonfinite, 0);
    assert.ok(Math.abs(s.normA - norm(m.A)) <= 1e-6 * s.normA);
    assert.ok(Math.abs(s.balance - norm(m.B) / norm(m.A)) <= 1e-6 * s.balance);
    const bad = { ...m, A: m.A.map((v, i) => (i === 3 ? Number.NaN : v)) };
    assert.equal(spectra(bad).nonfinite, 1);
  });
});

describe('Philox stream and argument checks', () => {
  it('reproduces the Random123 known answer and derives DARE masks from uniforms', () => {
    // seed 0, stream 0, block 0 is philox4x32_10(ctr 0, key 0)
    assert.deepEqual(Array.from(philox(0, 0, 4, 'u32')), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    const u = philox(3, 5, 10, 'uniform', 2);
    assert.deepEqual(Array.from(u), Array.from(philox(3, 5, 12, 'uniform')).slice(2));
    const mask = dareMask(9, 'model.layers.0.mlp.up_proj', 'A', 2, 1000, 0.3);
    const ref = philox(9, streamId('dare:model.layers.0.mlp.up_proj:A:2'), 1000, 'uniform');
    assert.deepEqual(
      Array.from(mask),
      Array.from(ref, (v) => (v < 0.3 ? 1 : 0)),
    );
  });

  it('rejects bad shapes with TypeError and non-finite input with LowrankError(invalid_request)', () => {
    assert.throws(() => svd({ rows: 2, cols: 3, data: new Float32Array(5) }), TypeError);
    assert.throws(
      () => svd({ rows: 1, cols: 1, data: new Float32Array(1) }, { precision: 'f16' as 'f32' }),
      /svd precision must be f32 or f64/,
    );
    assert.throws(() => factoredSvd({ r: 2, in: 3, out: 4, A: new Float32Array(6), B: new Float32Array(7), scale: 1 }), TypeError);
    assert.throws(
      () => svd({ rows: 2, cols: 2, data: new Float32Array([1, Number.NaN, 0, 1]) }),
      (e: unknown) => e instanceof LowrankError && e.code === 'invalid_request' && /NaN/.test(e.message),
    );
  });
});
