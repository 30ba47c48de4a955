/**
 * The ICM-LoRA generator's native CVAE against a PyTorch float64 replica
 * (worker/test/python/cvae_ref.py): one forward/backward (loss terms and all 8 gradients)
 * and one AdamW step, on seeded random parameters and data. Tolerances: loss terms within
 * 1e-5 relative; gradients within 2e-4 of their tensor's max |value| (f32 GEMMs against
 * f64); AdamW-updated parameters within 1e-6 absolute (lr 1e-3). Also: the native training
 * loop is deterministic (same seed, same bytes) and lowers the loss.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  CVAE_PARAM_NAMES,
  type CvaeDims,
  cvaeDecode,
  cvaeEncode,
  cvaeForwardBackward,
  cvaeInit,
  cvaeParamSizes,
  cvaeTrain,
} from '../src/native/cvae.ts';
import { philox, streamId } from '../src/native/linalg.ts';
import { type Entry, loadF32, readJson, runPython, saveF32, writeJson } from './support/python-ref.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-cvae-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const dims: CvaeDims = { input: 96, cond: 12, hidden: 24, latent: 6 };
const n = 5;
const normal = (k: string, len: number) => philox(11, streamId(`cvae-test:${k}`), len, 'normal') as Float32Array;

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

describe('native CVAE (ICM-LoRA generator)', () => {
  it('matches PyTorch on one forward/backward and one AdamW step', () => {
    const params = cvaeInit(dims, 5);
    assert.deepEqual(
      params.map((p) => p.length),
      cvaeParamSizes(dims),
    );
    const x = normal('x', n * dims.input);
    const c = normal('c', n * dims.cond);
    const eps = normal('eps', n * dims.latent);
    const beta = 0.005;
    const got = cvaeForwardBackward(dims, params, n, x, c, eps, beta);
    const shapes = [
      [dims.hidden, dims.input],
      [dims.hidden],
      [2 * dims.latent, dims.hidden + dims.cond],
      [2 * dims.latent],
      [dims.hidden, dims.latent + dims.cond],
      [dims.hidden],
      [dims.input, dims.hidden],
      [dims.input],
    ];
    const dir = mkdtempSync(join(tmp, 'ref-'));
    writeJson(dir, 'in.json', {
      dims,
      n,
      beta,
      lr: 1e-3,
      weightDecay: 0.01,
      params: params.map((p, i) => saveF32(dir, `p${i}`, p, shapes[i] as number[])),
      x: saveF32(dir, 'x', x, [n, dims.input]),
      c: saveF32(dir, 'c', c, [n, dims.cond]),
      eps: saveF32(dir, 'eps', eps, [n, dims.latent]),
    });
    runPython('cvae_ref.py', dir);
    const ref = readJson(dir, 'out.json') as { mse: number; kl: number; total: number; grads: Entry[]; updated: Entry[] };
    for (const k of ['mse', 'kl', 'total'] as const)
      assert.ok(Math.abs(got[k] - ref[k]) <= 1e-5 * Math.abs(ref[k]), `${k}: ${got[k]} vs PyTorch ${ref[k]}`);
    CVAE_PARAM_NAMES.forEach((name, i) => {
      const want = loadF32(dir, ref.grads[i] as Entry);
      const have = got.grads[i] as Float32Array;
      const tol = 2e-4 * maxAbs(want);
      for (let k = 0; k < want.length; k++)
        assert.ok(Math.abs((have[k] as number) - (want[k] as number)) <= tol, `grad ${name}[${k}]: ${have[k]} vs ${want[k]}`);
    });
    // One AdamW step from zero moments (lr 1e-3, weight decay 0.01; the cosine factor of step 0 is 1).
    const state = {
      params: params.map((p) => p.slice()),
      m: params.map((p) => new Float32Array(p.length)),
      v: params.map((p) => new Float32Array(p.length)),
      step: 0,
    };
    // The training loop draws its own ε from Philox; feed the same one to PyTorch by using a fresh run.
    const eps0 = philox(3, streamId('cvae:eps'), n * dims.latent, 'normal') as Float32Array;
    const dir2 = mkdtempSync(join(tmp, 'ref-'));
    writeJson(dir2, 'in.json', {
      dims,
      n,
      beta,
      lr: 1e-3,
      weightDecay: 0.01,
      params: params.map((p, i) => saveF32(dir2, `p${i}`, p, shapes[i] as number[])),
      x: saveF32(dir2, 'x', x, [n, dims.input]),
      c: saveF32(dir2, 'c', c, [n, dims.cond]),
      eps: saveF32(dir2, 'eps', eps0, [n, dims.latent]),
    });
    cvaeTrain(dims, state, n, x, c, {
      lr: 1e-3,
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-8,
      weightDecay: 0.01,
      beta,
      totalSteps: 10,
      steps: 1,
      seed: 3,
    });
    assert.equal(state.step, 1);
    runPython('cvae_ref.py', dir2);
    const ref2 = readJson(dir2, 'out.json') as { updated: Entry[] };
    CVAE_PARAM_NAMES.forEach((name, i) => {
      const want = loadF32(dir2, ref2.updated[i] as Entry);
      const have = state.params[i] as Float32Array;
      for (let k = 0; k < want.length; k++)
        assert.ok(Math.abs((have[k] as number) - (want[k] as number)) <= 1e-6, `AdamW ${name}[${k}]: ${have[k]} vs ${want[k]}`);
    });
  });

  it('trains deterministically for a seed and fits its data; encode/decode reconstruct', () => {
    const x = normal('fit-x', 4 * dims.input);
    const c = normal('fit-c', 4 * dims.cond);
    const runOnce = () => {
      const p = cvaeInit(dims, 9);
      const s = { params: p, m: p.map((a) => new Float32Array(a.length)), v: p.map((a) => new Float32Array(a.length)), step: 0 };
      const o = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, beta: 0.005, totalSteps: 400, seed: 4 };
      // Two calls (as the job does, between progress reports) equal one long run.
      const losses = [...cvaeTrain(dims, s, 4, x, c, { ...o, steps: 150 }), ...cvaeTrain(dims, s, 4, x, c, { ...o, steps: 1000 })];
      return { s, losses };
    };
    const a = runOnce();
    const b = runOnce();
    assert.equal(a.losses.length, 400);
    a.s.params.forEach((p, i) => {
      assert.deepEqual(p, b.s.params[i]);
    });
    const first = a.losses[0]?.mse as number;
    const last = a.losses.at(-1)?.mse as number;
    assert.ok(last < 0.1 * first, `mse ${first} -> ${last}`);
    const { mu } = cvaeEncode(dims, a.s.params, 4, x, c);
    const xh = cvaeDecode(dims, a.s.params, 4, mu, c);
    let se = 0;
    for (let i = 0; i < x.length; i++) se += ((xh[i] as number) - (x[i] as number)) ** 2;
    assert.ok(se / x.length < 0.2, `reconstruction mse ${se / x.length}`);
    assert.throws(() => cvaeDecode(dims, a.s.params, 4, new Float32Array(3), c), /z has 3 entries/);
  });
});
