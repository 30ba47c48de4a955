/** Seeded random LoRA modules (a small LCG, no native call), for tests that need real adapter files. */
import type { LoraModule } from '../../src/native/linalg.ts';

export function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return (s / 2 ** 31) * 2 - 1;
  };
}

export function randomModule(rnd: () => number, out: number, inn: number, r: number, scale = 1): LoraModule {
  return { r, in: inn, out, A: Float32Array.from({ length: r * inn }, rnd), B: Float32Array.from({ length: out * r }, rnd), scale };
}
