/**
 * Adapter rank reduction against PyTorch and PEFT: the reduced module equals the
 * truncated SVD of the dense s·BA from torch.linalg.svd (rel ≤ 1e-5 where the gap at the
 * cut is ≥ 1e-3·σ1, METHODS §8), the energy rule picks exactly PEFT's
 * _find_cutoff_index on the same singular values, and the budget and serving-limit
 * policies keep their promises.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { chooseRanks, energyCutoff, reduceRank } from '../src/native/compress.ts';
import { type LoraModule, philox } from '../src/native/linalg.ts';
import { delta64, rel } from './support/numeric.ts';
import { at, type Entry, loadF32, readJson, runPython, saveF32, writeJson } from './support/python-ref.ts';

const normal = (stream: number, n: number, scale: number) => Float32Array.from(philox(7, stream, n, 'normal'), (x) => x * scale);
function module(stream: number, r: number, inDim: number, out: number, scale: number): LoraModule {
  return { r, in: inDim, out, scale, A: normal(stream * 2, r * inDim, 1 / Math.sqrt(inDim)), B: normal(stream * 2 + 1, out * r, 0.5) };
}
const modules: Record<string, LoraModule> = {
  'layers.0.q_proj': module(1, 16, 96, 96, 2),
  'layers.0.v_proj': module(2, 16, 96, 32, 2 / Math.sqrt(16)),
  'layers.0.down_proj': module(3, 8, 160, 96, 0.5),
  'layers.1.q_proj': module(4, 4, 96, 96, 1),
};

describe('rank reduction', () => {
  const work = mkdtempSync(join(tmpdir(), 'compress-'));
  const cases = Object.entries(modules).map(([name, m], i) => ({
    id: `m${i}`,
    name,
    op: 'delta_svd',
    A: saveF32(work, `m${i}.A`, m.A, [m.r, m.in]),
    B: saveF32(work, `m${i}.B`, m.B, [m.out, m.r]),
    scale: m.scale,
  }));
  writeJson(work, 'cases.json', { cases });
  runPython('torch_linalg_ref.py', work);
  const torch = new Map(
    (readJson(work, 'results.json') as { results: Array<{ id: string; u: Entry; s: Entry; vt: Entry }> }).results.map((r) => [
      cases.find((c) => c.id === r.id)?.name as string,
      { u: loadF32(work, r.u), s: loadF32(work, r.s), vt: loadF32(work, r.vt), uCols: at(r.u.shape, 1) },
    ]),
  );

  /** torch's best rank-k approximation of module `name`. */
  function truncated(name: string, k: number): Float64Array {
    const m = modules[name] as LoraModule;
    const t = torch.get(name);
    assert.ok(t);
    const d = new Float64Array(m.out * m.in);
    for (let p = 0; p < k; p++)
      for (let i = 0; i < m.out; i++) {
        const us = at(t.u, i * t.uCols + p) * at(t.s, p);
        for (let j = 0; j < m.in; j++) d[i * m.in + j] = (d[i * m.in + j] as number) + us * at(t.vt, p * m.in + j);
      }
    return d;
  }

  it('fixed rank: equals torch truncated SVD of the dense delta, at scale 1, balanced', () => {
    const { modules: out, report } = reduceRank(modules, { policy: { fixed: 4 } });
    for (const [name, m] of Object.entries(out)) {
      const k = Math.min(4, (modules[name] as LoraModule).r);
      assert.equal(m.r, k);
      assert.equal(m.scale, 1, 'scalings are folded into the factors');
      const sigma = torch.get(name)?.s as Float32Array;
      const gap = k < sigma.length ? (at(sigma, k - 1) - at(sigma, k)) / at(sigma, 0) : 1;
      assert.ok(gap >= 1e-3, `${name}: test data has a clear gap at the cut`);
      const err = rel(delta64(m), truncated(name, k));
      assert.ok(err <= 1e-5, `${name}: rel ${err}`);
      const nA = Math.hypot(...m.A);
      const nB = Math.hypot(...m.B);
      assert.ok(Math.abs(nA - nB) / nB < 1e-3, `${name}: balanced split (‖A‖ ${nA}, ‖B‖ ${nB})`);
      const want = Math.sqrt(1 - (report[name]?.energyKept as number));
      assert.ok(Math.abs(rel(truncated(name, k), delta64(modules[name] as LoraModule)) - want) < 1e-4, `${name}: reported error`);
    }
  });

  it('energy threshold: the same ranks as PEFT _find_cutoff_index on the same singular values', () => {
    const taus = [0.5, 0.9, 0.95, 0.99, 1];
    const names = Object.keys(modules);
    writeJson(work, 'cutoff.json', { sigmas: names.map((n) => Array.from(torch.get(n)?.s as Float32Array)), taus });
    runPython('peft_cutoff_ref.py', work);
    const peft = (readJson(work, 'cutoff-results.json') as { k: number[][] }).k;
    names.forEach((n, i) => {
      const ours = taus.map((t) => energyCutoff(torch.get(n)?.s as Float32Array, t));
      assert.deepEqual(ours, peft[i], n);
      const reduced = reduceRank({ [n]: modules[n] as LoraModule }, { policy: { energy: 0.9 } });
      assert.equal(reduced.modules[n]?.r, ours[1]);
      assert.ok((reduced.report[n]?.energyKept as number) >= 0.9 - 1e-6);
    });
  });

  it('parameter budget: never over budget, within bounds, and greedy by σ² per parameter', () => {
    const params = 20_000;
    const spectra = Object.entries(modules).map(([name, m]) => ({
      name,
      sigma: Array.from(torch.get(name)?.s as Float32Array).slice(0, m.r),
      cost: m.in + m.out,
      rank: m.r,
    }));
    const ranks = chooseRanks(spectra, { policy: { budget: { params, minRank: 1, maxRank: 8 } } });
    let spent = 0;
    let worstTaken = Number.POSITIVE_INFINITY;
    let bestLeft = 0;
    for (const s of spectra) {
      const k = ranks.get(s.name) as number;
      assert.ok(k >= 1 && k <= Math.min(8, s.rank), `${s.name}: ${k} within bounds`);
      spent += k * s.cost;
      for (let i = 1; i < k; i++) worstTaken = Math.min(worstTaken, at(s.sigma, i) ** 2 / s.cost);
      if (k < Math.min(8, s.rank)) bestLeft = Math.max(bestLeft, at(s.sigma, k) ** 2 / s.cost);
    }
    assert.ok(spent <= params, `spent ${spent} of ${params}`);
    assert.ok(bestLeft <= worstTaken, 'no rank left out is worth more per parameter than one taken');
  });

  it('serving limit: caps every module, alone or with a policy (the one-flag CompressionJob)', () => {
    const alone = reduceRank(modules, { serveMaxRank: 8 });
    for (const [name, m] of Object.entries(alone.modules)) assert.equal(m.r, Math.min(8, (modules[name] as LoraModule).r));
    const both = reduceRank(modules, { policy: { energy: 0.999 }, serveMaxRank: 4 });
    for (const m of Object.values(both.modules)) assert.ok(m.r <= 4);
    assert.throws(() => reduceRank(modules, {}), /give a rank policy/);
    assert.throws(() => reduceRank(modules, { policy: { energy: 1.5 } }), /energy threshold/);
  });
});
