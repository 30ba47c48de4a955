/**
 * Dense fp32 linear algebra and LoRA factor algebra from the native core (METHODS §0.4,
 * §6, §7 P1/P4/P5/P6/P10): GEMM, thin QR, thin and randomized SVD, the factored SVD of
 * s·BA, re-factoring, factored inner products, per-module spectra and the Philox stream.
 * Matrices are row-major Float32Arrays. Wrong shapes or types throw TypeError; numerical
 * refusals (NaN/Inf input) throw LowrankError('invalid_request').
 */
import { loadNative } from './load.ts';
import { callNative } from './native-error.ts';

/** Row-major: element (i, j) is data[i * cols + j]. */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float32Array;
}

/** Thin SVD M = U diag(s) Vt, s descending, sign rule of METHODS §0.1. */
export interface SvdResult {
  u: Matrix;
  s: Float32Array;
  vt: Matrix;
}

/** One LoRA module: ΔW = scale · B A, A [r, in] (lora_A.weight), B [out, r] (lora_B.weight). */
export interface LoraModule {
  r: number;
  in: number;
  out: number;
  A: Float32Array;
  B: Float32Array;
  scale: number;
}

/** METHODS §6 per-module diagnostics; NaN where undefined (balance with ‖A‖ = 0; all but the norms when nonfinite > 0). */
export interface ModuleSpectra {
  sigma: Float32Array;
  /** energy[k - 1] = E(k) = Σ_{i≤k} σ² / Σ σ². */
  energy: Float64Array;
  /** Smallest k with E(k) ≥ τ; 0 when ΔW = 0, -1 when the factors are not finite. */
  kAt: { '0.5': number; '0.9': number; '0.95': number; '0.99': number };
  fro: number;
  spec: number;
  nuc: number;
  erank: number;
  srank: number;
  normA: number;
  normB: number;
  balance: number;
  maxabs: number;
  nonfinite: number;
}

export type Split = 'balanced' | 'b_heavy';
export type PhiloxKind = 'u32' | 'uniform' | 'normal';
export type Seed = bigint | number;

interface LinalgNative {
  matmul(a: Matrix, transA: boolean, b: Matrix, transB: boolean, alpha: number, beta: number, c?: Matrix): Matrix;
  qr(m: Matrix): { q: Matrix; r: Matrix };
  svd(m: Matrix, f64?: boolean): SvdResult;
  randomizedSvd(m: Matrix, rank: number, oversample: number, niter: number, seed: Seed, stream: Seed): SvdResult;
  factoredSvd(m: LoraModule): SvdResult;
  refactor(m: LoraModule, rank: number, targetScale: number, split: Split): LoraModule;
  innerProduct(x: LoraModule, y: LoraModule): number;
  spectra(m: LoraModule): ModuleSpectra;
  philox(seed: Seed, stream: Seed, offset: Seed, n: number, kind: PhiloxKind): Uint32Array | Float32Array;
  streamId(purpose: string): bigint;
  dareMask(seed: Seed, module: string, tensor: string, input: number, n: number, density: number): Uint8Array;
  setBlasThreads(n: number): void;
  blasThreads(): number;
}

const native = (): LinalgNative => loadNative() as unknown as LinalgNative;

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

export function checkMatrix(m: Matrix, name: string): void {
  if (typeof m !== 'object' || m === null) throw new TypeError(`${name} must be { rows, cols, data }`);
  if (!isCount(m.rows) || !isCount(m.cols)) throw new TypeError(`${name}.rows and ${name}.cols must be non-negative integers`);
  if (!(m.data instanceof Float32Array)) throw new TypeError(`${name}.data must be a Float32Array`);
  if (m.data.length !== m.rows * m.cols) {
    throw new TypeError(`${name}.data has ${m.data.length} entries, expected rows x cols = ${m.rows} x ${m.cols}`);
  }
}

export function checkModule(m: LoraModule, name: string): void {
  if (typeof m !== 'object' || m === null) throw new TypeError(`${name} must be { r, in, out, A, B, scale }`);
  for (const k of ['r', 'in', 'out'] as const) {
    if (!isCount(m[k]) || m[k] < 1) throw new TypeError(`${name}.${k} must be a positive integer`);
  }
  if (typeof m.scale !== 'number' || !Number.isFinite(m.scale)) throw new TypeError(`${name}.scale must be a finite number`);
  if (!(m.A instanceof Float32Array) || m.A.length !== m.r * m.in) {
    throw new TypeError(`${name}.A must be a Float32Array of r x in = ${m.r} x ${m.in} entries`);
  }
  if (!(m.B instanceof Float32Array) || m.B.length !== m.out * m.r) {
    throw new TypeError(`${name}.B must be a Float32Array of out x r = ${m.out} x ${m.r} entries`);
  }
}

function checkSeed(x: Seed, name: string): void {
  if (typeof x === 'bigint' ? x < 0n || x >= 1n << 64n : !isCount(x)) {
    throw new TypeError(`${name} must be a non-negative integer below 2^64 (a bigint beyond 2^53)`);
  }
}

/** alpha · op(a) op(b) + beta · c (c omitted: beta is ignored). */
export function gemm(
  a: Matrix,
  b: Matrix,
  opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number; c?: Matrix } = {},
): Matrix {
  checkMatrix(a, 'a');
  checkMatrix(b, 'b');
  if (opts.c !== undefined) checkMatrix(opts.c, 'c');
  const inner = [opts.transA ? a.rows : a.cols, opts.transB ? b.cols : b.rows];
  if (inner[0] !== inner[1]) throw new TypeError(`gemm: inner dimensions differ (${inner[0]} vs ${inner[1]})`);
  return callNative(() => native().matmul(a, !!opts.transA, b, !!opts.transB, opts.alpha ?? 1, opts.beta ?? 0, opts.c));
}

/** Thin QR: m [rows, cols] = q [rows, k] r [k, cols], k = min(rows, cols), diag(r) ≥ 0. */
export function qr(m: Matrix): { q: Matrix; r: Matrix } {
  checkMatrix(m, 'm');
  return callNative(() => native().qr(m));
}

/** Thin SVD (LAPACK gesdd, gesvd as fallback): u [rows, k], s [k], vt [k, cols]. */
export function svd(m: Matrix, opts: { precision?: 'f32' | 'f64' } = {}): SvdResult {
  checkMatrix(m, 'm');
  const precision = opts.precision ?? 'f32';
  if (precision !== 'f32' && precision !== 'f64') throw new TypeError('svd precision must be f32 or f64');
  return callNative(() => native().svd(m, precision === 'f64'));
}

export interface RandomizedSvdOptions {
  rank: number;
  /** p extra probe columns; default 10 (torch.svd_lowrank uses 0). */
  oversample?: number;
  /** Power iterations, each re-orthonormalised after both half-steps; default 4. */
  niter?: number;
  seed: Seed;
  stream?: Seed;
}

/** Halko–Martinsson–Tropp randomized SVD at rank k; deterministic for (seed, stream). */
export function randomizedSvd(m: Matrix, opts: RandomizedSvdOptions): SvdResult {
  checkMatrix(m, 'm');
  if (!isCount(opts.rank) || opts.rank < 1) throw new TypeError('rank must be a positive integer');
  const oversample = opts.oversample ?? 10;
  const niter = opts.niter ?? 4;
  if (!isCount(oversample) || !isCount(niter)) throw new TypeError('oversample and niter must be non-negative integers');
  checkSeed(opts.seed, 'seed');
  checkSeed(opts.stream ?? 0, 'stream');
  return callNative(() => native().randomizedSvd(m, opts.rank, oversample, niter, opts.seed, opts.stream ?? 0));
}

/** SVD of scale · B A without forming it (QR of B and Aᵀ, SVD of the r x r core). */
export function factoredSvd(m: LoraModule): SvdResult {
  checkModule(m, 'module');
  return callNative(() => native().factoredSvd(m));
}

/** The module's delta re-factored at rank k (zero-padded past its rank) and scale s'; balanced by default. */
export function refactor(m: LoraModule, rank: number, opts: { targetScale?: number; split?: Split } = {}): LoraModule {
  checkModule(m, 'module');
  if (!isCount(rank) || rank < 1) throw new TypeError('rank must be a positive integer');
  const s = opts.targetScale ?? 1;
  if (!(s > 0) || !Number.isFinite(s)) throw new TypeError('targetScale must be finite and > 0');
  return callNative(() => native().refactor(m, rank, s, opts.split ?? 'balanced'));
}

/** ⟨ΔW_x, ΔW_y⟩_F from the factors. */
export function innerProduct(x: LoraModule, y: LoraModule): number {
  checkModule(x, 'x');
  checkModule(y, 'y');
  if (x.in !== y.in || x.out !== y.out) throw new TypeError('innerProduct: the modules differ in shape');
  return callNative(() => native().innerProduct(x, y));
}

/** METHODS §6 diagnostics of scale · B A. */
export function spectra(m: LoraModule): ModuleSpectra {
  checkModule(m, 'module');
  return callNative(() => native().spectra(m));
}

/** n values of the Philox4x32-10 stream (seed, stream) from element `offset`. */
export function philox(seed: Seed, stream: Seed, n: number, kind: PhiloxKind, offset: Seed = 0): Uint32Array | Float32Array {
  checkSeed(seed, 'seed');
  checkSeed(stream, 'stream');
  checkSeed(offset, 'offset');
  if (!isCount(n)) throw new TypeError('n must be a non-negative integer');
  return callNative(() => native().philox(seed, stream, offset, n, kind));
}

/** The stream id (64-bit FNV-1a) of a purpose string such as "rsvd:model.layers.0.q_proj". */
export function streamId(purpose: string): bigint {
  if (typeof purpose !== 'string') throw new TypeError('purpose must be a string');
  return native().streamId(purpose);
}

/** The DARE keep-mask a merge with this seed draws for (module, tensor 'A' | 'B' | 'delta', input index). */
export function dareMask(seed: Seed, module: string, tensor: 'A' | 'B' | 'delta', input: number, n: number, density: number): Uint8Array {
  checkSeed(seed, 'seed');
  if (!isCount(input) || !isCount(n)) throw new TypeError('input and n must be non-negative integers');
  if (!(density > 0 && density <= 1)) throw new TypeError('density must be in (0, 1]');
  return callNative(() => native().dareMask(seed, module, tensor, input, n, density));
}

/** OpenBLAS threads; results are deterministic for a given count. */
export function setBlasThreads(n: number): void {
  if (!isCount(n) || n < 1) throw new TypeError('threads must be a positive integer');
  native().setBlasThreads(n);
}

export function blasThreads(): number {
  return native().blasThreads();
}
