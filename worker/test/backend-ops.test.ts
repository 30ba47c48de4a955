/**
 * One suite of test vectors on both compute backends (backend_ops.h): the CPU half against
 * fp64 references, the CUDA half against the CPU half with the same METHODS §8.1 tolerance.
 * Where no GPU is usable the CUDA half is reported as skipped with the reason, not passed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backendInfo, backendOps } from '../src/native/backend.ts';
import { BACKEND_CASES, bf16VersusFp32 } from './support/backend-cases.ts';
import { rel } from './support/numeric.ts';

const info = backendInfo();
const ops = backendOps();
const noGpu = info.cudaAvailable ? false : `no usable CUDA device: ${info.reason ?? 'unknown'}`;

function assertClose(got: Record<string, ArrayLike<number>>, want: Record<string, ArrayLike<number>>, tol: number): void {
  for (const [key, w] of Object.entries(want)) {
    const g = got[key];
    assert.ok(g, `output ${key} is missing`);
    assert.equal(g.length, w.length, `${key}: length`);
    for (let i = 0; i < g.length; i++) assert.ok(Number.isFinite(g[i]), `${key}[${i}] is not finite`);
    if (tol === 0) {
      assert.deepEqual(Float32Array.from(g), Float32Array.from(w), `${key}: not the same bytes`);
      continue;
    }
    const e = rel(g, w);
    assert.ok(e <= tol, `${key}: rel ${e.toExponential(2)} > ${tol}`);
  }
}

describe('backend ops: CPU against fp64 references', () => {
  for (const c of BACKEND_CASES) {
    test(`${c.name} [cpu] (${c.tolerance ? `rel <= ${c.tolerance}` : 'same bytes'})`, () =>
      assertClose(c.run(ops, 'cpu'), c.reference(), c.tolerance));
  }
  test('lora forward with bf16 W against the unrounded fp32 W [cpu] (bf16 path: rel <= 1e-2)', () => {
    const { args, fp32 } = bf16VersusFp32();
    const e = rel(ops.loraForward('cpu', args).y, fp32.y);
    assert.ok(e <= 1e-2, `rel ${e}`);
    assert.ok(e > 1e-6, 'the bf16 weights were not rounded (expected a bf16-sized difference)');
  });
});

describe('backend ops: CUDA against the CPU', () => {
  for (const c of BACKEND_CASES) {
    test(`${c.name} [cuda] (${c.tolerance ? `rel <= ${c.tolerance}` : 'same bytes'})`, { skip: noGpu }, () =>
      assertClose(c.run(ops, 'cuda'), c.run(ops, 'cpu'), c.tolerance),
    );
  }
  test('CUDA ops are deterministic: two runs give identical bytes [cuda]', { skip: noGpu }, () => {
    for (const c of BACKEND_CASES) assert.deepEqual(c.run(ops, 'cuda'), c.run(ops, 'cuda'), c.name);
  });
});

describe('backend ops: argument checks', () => {
  test('a wrong length names the array and the expected size', () => {
    assert.throws(() => ops.swiglu('cpu', { n: 4, gate: new Float32Array(3), up: new Float32Array(4) }), /gate has 3 entries, expected 4/);
  });
  test('an unknown backend name is refused', () => {
    assert.throws(() => ops.swiglu('tpu' as 'cpu', { n: 1, gate: new Float32Array(1), up: new Float32Array(1) }), /backend must be/);
  });
  test('asking for cuda where it is unavailable names the reason', { skip: info.cudaAvailable ? 'a GPU is usable here' : false }, () => {
    assert.throws(
      () => ops.swiglu('cuda', { n: 1, gate: new Float32Array(1), up: new Float32Array(1) }),
      (e: Error & { code?: string }) => e.code === 'backend_unavailable' && e.message.includes(info.reason ?? '?'),
    );
  });
  test('rope refuses a position outside its tables', () => {
    assert.throws(
      () =>
        ops.rope('cpu', {
          n: 1,
          heads: 1,
          headDim: 2,
          npos: 1,
          x: new Float32Array(2),
          pos: Int32Array.of(3),
          cos: new Float32Array(1),
          sin: new Float32Array(1),
          inverse: false,
        }),
      /position is outside the tables/,
    );
  });
});
