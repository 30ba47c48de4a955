/** Float64 reference arithmetic shared by the parity tests. */
import assert from 'node:assert/strict';
import type { LoraModule } from '../../src/native/linalg.ts';
import { at } from './python-ref.ts';

export const norm = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));

/** ‖x − y‖ / ‖y‖ (METHODS §8 `rel`). */
export function rel(x: ArrayLike<number>, y: ArrayLike<number>): number {
  assert.equal(x.length, y.length);
  let d = 0;
  for (let i = 0; i < x.length; i++) d += (at(x, i) - at(y, i)) ** 2;
  return Math.sqrt(d) / Math.max(norm(y), 1e-30);
}

/** fp64 s·B·A [out, in]. */
export function delta64(m: LoraModule): Float64Array {
  const d = new Float64Array(m.out * m.in);
  for (let i = 0; i < m.out; i++)
    for (let p = 0; p < m.r; p++) {
      const b = at(m.B, i * m.r + p) * m.scale;
      if (b === 0) continue;
      for (let j = 0; j < m.in; j++) d[i * m.in + j] = at(d, i * m.in + j) + b * at(m.A, p * m.in + j);
    }
  return d;
}
