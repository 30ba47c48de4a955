/** One case of the cross-backend suite (backend-cases.ts) and the seeded inputs the cases share. */
import type { BackendName, BackendOps } from '../../src/native/backend.ts';
import { lcg } from './random-adapter.ts';

export type Arrays = Record<string, ArrayLike<number>>;

export interface BackendCase {
  name: string;
  run(ops: BackendOps, backend: BackendName): Arrays;
  /** The fp64 reference of the CPU result (the same keys). */
  reference(): Arrays;
  /** rel = ‖x − y‖ / ‖y‖ per output, CPU vs reference and CUDA vs CPU; 0: identical bytes. */
  tolerance: number;
}

export const rand = (seed: number, n: number, scale = 1) => {
  const r = lcg(seed);
  return Float32Array.from({ length: n }, () => r() * scale);
};
