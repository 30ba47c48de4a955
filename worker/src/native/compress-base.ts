/**
 * Compression of dense weights and adapter factors (METHODS §3.3–3.5, §7 P15): EoRA
 * eigenspace compensation (and the activation-aware base SVD, Ŵ = 0), CUR with DEIM
 * selection, int8 quantization with one scale per row, and group-wise RTN used to build
 * compressed bases. Plain truncated SVD / extraction is factorDense (delta.ts).
 */
import { checkMatrix, type LoraModule, type Matrix } from './linalg.ts';
import { loadNative } from './load.ts';
import { callNative } from './native-error.ts';

export interface EoraResult {
  /** Rank r at scale 1; deploy y = Ŵx + BAx. */
  module: LoraModule;
  /** Eigenvalues of XᵀX after the floor, ascending. */
  eigenvalues: Float64Array;
  floored: number;
  /** ‖ΔW Xᵀ‖_F and ‖(ΔW − BA) Xᵀ‖_F on the calibration inputs. */
  errorBefore: number;
  errorAfter: number;
}

export interface CurResult {
  rows: number[];
  cols: number[];
  c: Matrix;
  u: Matrix;
  r: Matrix;
  relError: number;
}

/** q (row-major int8) and one fp32 scale per row: x ≈ q · scale[row]. */
export interface QuantizedRows {
  rows: number;
  cols: number;
  q: Int8Array;
  scale: Float32Array;
}

interface CompressNative {
  eora(delta: Matrix, x: Matrix, rank: number, eigenFloor: number): EoraResult;
  curDecompose(w: Matrix, k: number, colWeight?: Float32Array): CurResult;
  deim(v: Matrix): number[];
  quantizeInt8Rows(m: Matrix): QuantizedRows;
  dequantizeInt8Rows(q: QuantizedRows): Matrix;
  rtnQuantize(w: Matrix, bits: number, groupSize: number): Matrix;
}

const native = (): CompressNative => loadNative() as unknown as CompressNative;
const positive = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 1;

/** EoRA: rank-r B, A minimising ‖(ΔW − BA) Xᵀ‖_F; delta [out, in], x [n, in] calibration inputs. */
export function eora(delta: Matrix, x: Matrix, rank: number, eigenFloor = 1e-10): EoraResult {
  checkMatrix(delta, 'delta');
  checkMatrix(x, 'x');
  if (!positive(rank)) throw new TypeError('rank must be a positive integer');
  if (!(eigenFloor >= 0)) throw new TypeError('eigenFloor must be >= 0');
  return callNative(() => native().eora(delta, x, rank, eigenFloor));
}

/** W ≈ C U R with k actual columns and rows (DEIM on the top-k singular vectors of W diag(colWeight)). */
export function curDecompose(w: Matrix, k: number, colWeight?: Float32Array): CurResult {
  checkMatrix(w, 'w');
  if (!positive(k)) throw new TypeError('k must be a positive integer');
  if (colWeight !== undefined && (!(colWeight instanceof Float32Array) || colWeight.length !== w.cols))
    throw new TypeError(`colWeight must be a Float32Array of ${w.cols} entries`);
  return callNative(() => native().curDecompose(w, k, colWeight));
}

/** DEIM indices of the k columns of v [n, k]. */
export function deim(v: Matrix): number[] {
  checkMatrix(v, 'v');
  return callNative(() => native().deim(v));
}

export function quantizeInt8Rows(m: Matrix): QuantizedRows {
  checkMatrix(m, 'm');
  return callNative(() => native().quantizeInt8Rows(m));
}

export function dequantizeInt8Rows(q: QuantizedRows): Matrix {
  if (!(q.q instanceof Int8Array) || q.q.length !== q.rows * q.cols) throw new TypeError('q.q must be an Int8Array of rows x cols');
  if (!(q.scale instanceof Float32Array) || q.scale.length !== q.rows) throw new TypeError('q.scale must be a Float32Array of rows');
  return callNative(() => native().dequantizeInt8Rows(q));
}

/** Ŵ: symmetric round-to-nearest on a `bits` grid, one absmax scale per groupSize run of a row. */
export function rtnQuantize(w: Matrix, bits: number, groupSize: number): Matrix {
  checkMatrix(w, 'w');
  if (!(positive(bits) && bits >= 2 && bits <= 8)) throw new TypeError('bits must be an integer in [2, 8]');
  if (!positive(groupSize)) throw new TypeError('groupSize must be a positive integer');
  return callNative(() => native().rtnQuantize(w, bits, groupSize));
}
