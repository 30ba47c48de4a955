/**
 * Delta-space merges against mergekit itself (0.1.5, installed beside the reference venv by
 * scripts/lib/pyenv.sh): task_arithmetic, ties, dare_linear, dare_ties (mergekit's
 * torch.bernoulli replaced by our masks) and model_stock (per tensor and filter-wise) on
 * dense deltas, compared elementwise (METHODS §8.1: fp32, rel ≤ 1e-6 for masked sums,
 * 1e-5 for Model Stock whose cosines we take from the factors). factorDense against
 * torch.linalg.svd: reconstruction rel ≤ 1e-5 (gap at the cut ≥ 1e-3·σ1) and the same
 * retained energy. LEGO has no library reference: property tests from METHODS §2.5.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LowrankError } from '@lowrank/crds/errors';
import { type DeltaMethod, factorDense, legoMerge, mergeDeltas, modelStock } from '../src/native/delta.ts';
import { innerProduct, type LoraModule, type Matrix, philox } from '../src/native/linalg.ts';
import { delta64, rel } from './support/numeric.ts';
import { type Entry, loadF32, pythonDir, readJson, referencePython, saveF32, writeJson } from './support/python-ref.ts';

const work = mkdtempSync(join(tmpdir(), 'lowrank-delta-merge-'));
after(() => rmSync(work, { recursive: true, force: true }));

const OUT = 24;
const IN = 40;
let streamNo = 1;
const normal = (n: number, scale = 1): Float32Array => {
  const x = philox(7, streamNo++, n, 'normal') as Float32Array;
  return x.map((v) => v * scale);
};
const dense = (rows: number, cols: number): Matrix => ({ rows, cols, data: normal(rows * cols) });
/** A random module; with `common`, that module plus noise (positively correlated deltas). */
const mod = (r: number, scale: number, common?: LoraModule): LoraModule => {
  const A = normal(r * IN, 0.3);
  const B = normal(OUT * r, 0.3);
  if (common) {
    for (let i = 0; i < A.length; i++) A[i] = (common.A[i] as number) + 0.4 * (A[i] as number);
    for (let i = 0; i < B.length; i++) B[i] = (common.B[i] as number) + 0.4 * (B[i] as number);
  }
  return { r, in: IN, out: OUT, A, B, scale };
};

function runMergekit(cases: unknown[]): Record<string, Record<string, unknown>> {
  writeJson(work, 'cases.json', cases);
  const mk = process.env.LOWRANK_MERGEKIT_PATH;
  if (!mk) assert.fail('LOWRANK_MERGEKIT_PATH is not set: run through scripts/test (lowrank_ensure_pyenv installs mergekit)');
  const r = spawnSync(referencePython(), [join(pythonDir, 'mergekit_ref.py'), work], {
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: [mk, pythonDir].join(':') },
  });
  assert.equal(r.status, 0, `mergekit_ref.py failed:\n${r.stderr}`);
  return readJson(work, 'results.json') as Record<string, Record<string, unknown>>;
}

describe('delta-space merges match mergekit', () => {
  const deltas = [dense(OUT, IN), dense(OUT, IN), dense(OUT, IN)];
  const weights = [0.6, -0.3, 1.1];
  const entries = deltas.map((d, i) => saveF32(work, `delta${i}`, d.data, [OUT, IN]));
  const maskBytes = deltas.map(() => (philox(9, streamNo++, OUT * IN, 'uniform') as Float32Array).map((u) => (u < 0.55 ? 1 : 0)));
  const masks = maskBytes.map((m) => Uint8Array.from(m));
  const maskEntries = masks.map((m, i) => saveF32(work, `mask${i}`, Float32Array.from(m), [OUT, IN]));
  interface Case {
    id: string;
    method: DeltaMethod;
    density?: number;
    lambda?: number;
    normalize?: boolean;
    signMethod?: 'total' | 'frequency';
  }
  const cases: Case[] = [
    { id: 'ta', method: 'task_arithmetic' },
    { id: 'ta-norm-lambda', method: 'task_arithmetic', normalize: true, lambda: 0.7 },
    { id: 'ties', method: 'ties', density: 0.4 },
    { id: 'ties-nonorm-lambda', method: 'ties', density: 0.3, normalize: false, lambda: 1.5 },
    { id: 'dare_linear', method: 'dare_linear', density: 0.55 },
    { id: 'dare_ties', method: 'dare_ties', density: 0.55 },
    { id: 'dare_ties-norm', method: 'dare_ties', density: 0.55, normalize: true },
  ];
  const ours = new Map<string, Matrix>();
  const stockInputs = (() => {
    const c = mod(6, 1);
    return [mod(6, 1.5, c), mod(6, 0.8, c), mod(6, 2.0, c)];
  })();
  const stockEntries = stockInputs.map((m, i) => saveF32(work, `stock${i}`, Float32Array.from(delta64(m)), [OUT, IN]));
  const svdM = dense(OUT, IN);
  const pyCases: unknown[] = [
    ...cases.map((c) => ({
      kind: 'gta',
      id: c.id,
      method: c.method,
      deltas: entries,
      weights,
      ...(c.density === undefined ? {} : { density: c.density }),
      ...(c.lambda === undefined ? {} : { lambda: c.lambda }),
      ...(c.normalize === undefined ? {} : { normalize: c.normalize }),
      ...(c.method.startsWith('dare') ? { masks: maskEntries } : {}),
    })),
    { kind: 'model_stock', id: 'stock', deltas: stockEntries, filter_wise: false },
    { kind: 'model_stock', id: 'stock-rows', deltas: stockEntries, filter_wise: true },
    { kind: 'svd', id: 'svd5', m: saveF32(work, 'svdm', svdM.data, [OUT, IN]), rank: 5 },
  ];
  let results: Record<string, Record<string, unknown>> = {};
  it('runs mergekit on the same tensors', () => {
    for (const c of cases)
      ours.set(
        c.id,
        mergeDeltas(deltas, {
          method: c.method,
          weights,
          ...(c.density === undefined ? {} : { density: c.density }),
          ...(c.lambda === undefined ? {} : { lambda: c.lambda }),
          ...(c.normalize === undefined ? {} : { normalize: c.normalize }),
          ...(c.method.startsWith('dare') ? { masks } : {}),
        }),
      );
    results = runMergekit(pyCases);
    assert.equal(results._version as unknown as string, '0.1.5');
  });
  for (const c of cases)
    it(`${c.id}: equals mergekit (rel ≤ 1e-6)`, () => {
      const theirs = loadF32(work, results[c.id]?.mix as Entry);
      const mine = ours.get(c.id) as Matrix;
      assert.ok(rel(mine.data, theirs) <= 1e-6, `${c.id}: rel ${rel(mine.data, theirs)}`);
    });
  for (const [id, filterWise] of [
    ['stock', false],
    ['stock-rows', true],
  ] as const)
    it(`model_stock ${filterWise ? 'filter-wise' : 'per tensor'}: equals mergekit on the deltas (rel ≤ 1e-5)`, () => {
      const theirs = loadF32(work, results[id]?.mix as Entry);
      const r = modelStock(stockInputs, filterWise);
      assert.equal(r.module.r, 18);
      assert.equal(r.clamped, 0);
      assert.ok(r.t.every((t) => t > 0 && t <= 1));
      const e = rel(delta64(r.module), theirs);
      assert.ok(e <= 1e-5, `model_stock rel ${e}`);
    });
  it('factorDense: truncated SVD equals torch.linalg.svd (rel ≤ 1e-5, same energy)', () => {
    const r = factorDense(svdM, { rank: 5 });
    const ref = results.svd5 as { approx: Entry; sigma: number[]; energy: number };
    const s = ref.sigma;
    assert.ok(((s[4] as number) - (s[5] as number)) / (s[0] as number) >= 1e-3);
    assert.ok(rel(delta64(r.module), loadF32(work, ref.approx)) <= 1e-5);
    assert.ok(Math.abs(r.retainedEnergy - ref.energy) <= 1e-6);
    const rr = factorDense(svdM, { rank: 5, randomized: true, niter: 4, seed: 3, purpose: 'rsvd:test' });
    // METHODS §8.1 randomized: error within (1 + 1e-3)·optimal only when the spectrum decays;
    // on a flat Gaussian spectrum we check that it is a valid rank-5 approximation near optimal.
    assert.equal(rr.module.r, 5);
    assert.ok(rr.retainedEnergy <= ref.energy + 1e-6 && rr.retainedEnergy >= 0.9 * ref.energy);
    const e = factorDense(svdM, { energy: 0.9 });
    assert.ok(e.retainedEnergy >= 0.9 - 1e-6 && e.module.r >= 1);
  });
  it('ties: magnitude ties at the cut are kept lowest index first (exact)', () => {
    const t: Matrix = { rows: 1, cols: 6, data: Float32Array.from([1, 3, -1, 1, 2, -1]) };
    // k = max(1, int(0.5 · 6)) = 3: keep 3, 2 and the first |1| (index 0)
    const r = mergeDeltas([t], { method: 'ties', weights: [1], density: 0.5 });
    assert.deepEqual(Array.from(r.data), [1, 3, 0, 0, 2, 0]);
    const one = mergeDeltas([t], { method: 'ties', weights: [1], density: 0.01 });
    assert.deepEqual(Array.from(one.data), [0, 3, 0, 0, 0, 0]);
  });
  it('refuses bad requests with a reason', () => {
    assert.throws(() => mergeDeltas(deltas, { method: 'ties', weights }), TypeError);
    assert.throws(
      () => mergeDeltas([deltas[0] as Matrix, dense(OUT, IN + 1)], { method: 'task_arithmetic', weights: [1, 1] }),
      (e: unknown) => e instanceof LowrankError && e.code === 'invalid_request' && /shape/.test(e.message),
    );
    assert.throws(() => modelStock([stockInputs[0] as LoraModule]), TypeError);
  });
});

describe('LoRA-LEGO rank-wise clustering (METHODS §2.5 properties)', () => {
  const inputs = [mod(4, 1.5), mod(3, 0.5), mod(5, 2)];
  const weights = [0.7, 1.2, -0.4];
  const exact = new Float64Array(OUT * IN);
  inputs.forEach((m, i) => {
    const d = delta64(m);
    for (let j = 0; j < d.length; j++) exact[j] = (exact[j] as number) + (weights[i] as number) * (d[j] as number);
  });
  it('k = Σ r_i without reweighting equals cat (rel ≤ 1e-5)', () => {
    const r = legoMerge(inputs, weights, { k: 12, reweightParameters: false, reweightOutput: false, seed: 5 });
    assert.equal(r.module.r, 12);
    assert.deepEqual(r.sizes, Array(12).fill(1));
    assert.ok(rel(delta64(r.module), exact) <= 1e-5);
  });
  it('is deterministic for a seed, and output reweighting restores the exact norm', () => {
    const a = legoMerge(inputs, weights, { k: 4, seed: 11, module: 'q' });
    const b = legoMerge(inputs, weights, { k: 4, seed: 11, module: 'q' });
    assert.deepEqual(Buffer.from(a.module.A.buffer), Buffer.from(b.module.A.buffer));
    assert.deepEqual(a.assignment, b.assignment);
    assert.equal(
      a.sizes.reduce((x, y) => x + y, 0),
      12,
    );
    const norm = Math.sqrt(innerProduct(a.module, a.module));
    const target = Math.sqrt(exact.reduce((s, v) => s + v * v, 0));
    assert.ok(Math.abs(norm - target) / target <= 1e-5);
    const e = legoMerge(inputs, weights, { k: 4, seed: 11, distance: 'euclidean', module: 'q' });
    assert.equal(e.module.r, 4);
  });
  it('permuting ranks inside an input changes nothing but the unit order', () => {
    const m = inputs[0] as LoraModule;
    const perm = [2, 0, 3, 1];
    const A = new Float32Array(m.A.length);
    const B = new Float32Array(m.B.length);
    perm.forEach((p, j) => {
      A.set(m.A.subarray(p * IN, (p + 1) * IN), j * IN);
      for (let o = 0; o < OUT; o++) B[o * m.r + j] = m.B[o * m.r + p] as number;
    });
    const permuted = [{ ...m, A, B }, inputs[1] as LoraModule, inputs[2] as LoraModule];
    const x = legoMerge(inputs, weights, { k: 12, reweightParameters: false, reweightOutput: false });
    const y = legoMerge(permuted, weights, { k: 12, reweightParameters: false, reweightOutput: false });
    assert.ok(rel(delta64(x.module), delta64(y.module)) <= 1e-5);
  });
});
