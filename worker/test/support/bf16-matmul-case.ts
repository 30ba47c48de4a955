/**
 * Run by backend-emulated.test.ts in a child process whose CUDA backend has
 * LOWRANK_CUDA_MATMUL=bf16: one LoRA forward with a bf16 W on the CUDA backend, against two
 * fp64 references: the bf16 matmul's definition (x rounded to bf16 in the base GEMM only,
 * the adapter in fp32) and the plain fp32 math. Prints {backend, gemm, relDefinition, relFp32}.
 */
import { backendInfo, backendOps } from '../../src/native/backend.ts';
import { rand } from './backend-case.ts';
import { fromBf16Bits, loraForwardRef, toBf16Bits } from './backend-cases.ts';

const sh = { n: 37, in: 150, out: 53, r: 6, scale: 1.5 };
const x = rand(11, sh.n * sh.in);
const w32 = rand(12, sh.out * sh.in, 0.3);
const args = { ...sh, x, w: toBf16Bits(w32), a: rand(13, sh.r * sh.in, 0.2), b: rand(14, sh.out * sh.r, 0.2) };
const wRef = fromBf16Bits(toBf16Bits(w32));
const { y } = backendOps().loraForward('cuda', args);

const plain = loraForwardRef(args, wRef);
// bf16(x) Wᵀ + s (x Aᵀ) Bᵀ: the base term from the rounded input, the adapter from x.
const base = loraForwardRef({ ...args, x: fromBf16Bits(toBf16Bits(x)), r: 0 }, wRef).y;
const adapter = Float64Array.from(plain.y, (v, i) => v - (loraForwardRef({ ...args, r: 0 }, wRef).y[i] as number));
const definition = Float64Array.from(base, (v, i) => v + (adapter[i] as number));

function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    d += ((a[i] as number) - (b[i] as number)) ** 2;
    n += (b[i] as number) ** 2;
  }
  return Math.sqrt(d / n);
}
const info = backendInfo();
console.log(JSON.stringify({ backend: info.backend, gemm: info.gemm, relDefinition: rel(y, definition), relFp32: rel(y, plain.y) }));
