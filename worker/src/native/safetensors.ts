/**
 * Typed access to safetensors files through the native core: read (zero-copy views over
 * a memory map where alignment permits), write (atomic, byte-compatible with the Python
 * `safetensors` package and PEFT) and float32 conversion. File and OS failures surface
 * as LowrankError (invalid_file, not_found, internal); wrong JS inputs as TypeError.
 */
import { ERROR_CODES, type ErrorCode, LowrankError } from '@lowrank/crds/errors';
import { loadNative } from './load.ts';

/** Every dtype a header may name; F16/BF16 data are raw bits in a Uint16Array. */
export type DType =
  | 'BOOL'
  | 'U8'
  | 'I8'
  | 'F8_E5M2'
  | 'F8_E4M3'
  | 'F8_E8M0'
  | 'I16'
  | 'U16'
  | 'F16'
  | 'BF16'
  | 'I32'
  | 'U32'
  | 'F32'
  | 'C64'
  | 'F64'
  | 'I64'
  | 'U64';

export interface TensorF32 {
  dtype: 'F32';
  shape: number[];
  data: Float32Array;
}
/** Half precision as raw IEEE binary16 bits. */
export interface TensorF16 {
  dtype: 'F16';
  shape: number[];
  data: Uint16Array;
}
/** bfloat16 as raw bits (the upper half of a float32). */
export interface TensorBF16 {
  dtype: 'BF16';
  shape: number[];
  data: Uint16Array;
}
/** int8 storage; a quantized adapter keeps its scales in a separate F32 tensor. */
export interface TensorI8 {
  dtype: 'I8';
  shape: number[];
  data: Int8Array;
}
/** Any other dtype read from a file (F64, I32, I64, U8, BOOL, ...). */
export interface TensorOther {
  dtype: Exclude<DType, 'F32' | 'F16' | 'BF16' | 'I8'>;
  shape: number[];
  data: Float32Array | Float64Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;
}
export type Tensor = TensorF32 | TensorF16 | TensorBF16 | TensorI8 | TensorOther;

/** What writeSafetensors accepts: F16/BF16 as raw bits, or as float32 values to round (nearest even). */
export type WritableTensor = TensorF32 | TensorF16 | TensorBF16 | TensorI8 | { dtype: 'F16' | 'BF16'; shape: number[]; data: Float32Array };

export interface SafetensorsFile {
  /** The header's `__metadata__` (PEFT writes {"format": "pt"}); empty when absent. */
  metadata: Record<string, string>;
  tensors: Record<string, Tensor>;
}

/** Dtypes toFloat32 converts, with the array their raw data comes in. */
export type ConvertibleDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I8' | 'U8';

interface SafetensorsNative {
  readSafetensors(path: string): SafetensorsFile;
  writeSafetensors(path: string, tensors: Record<string, WritableTensor>, metadata?: Record<string, string>): void;
  toFloat32(dtype: ConvertibleDType, data: ArrayBufferView): Float32Array;
}

const native = (): SafetensorsNative => loadNative() as unknown as SafetensorsNative;

/** The native core's `.code` as a platform error code: OS failures other than ENOENT are internal. */
function wrapNative(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof TypeError) return err;
  const code = (err as Error & { code?: unknown }).code;
  if (typeof code !== 'string') return err;
  const mapped: ErrorCode = code in ERROR_CODES ? (code as ErrorCode) : 'internal';
  return new LowrankError(mapped, err.message, { cause: err });
}

function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw wrapNative(err);
  }
}

/**
 * Reads and fully validates a safetensors file. Tensor data are views over a private
 * memory map (copy-on-write: writing to them never changes the file); the map is
 * released when the last view is garbage-collected.
 */
export function readSafetensors(path: string): SafetensorsFile {
  return call(() => native().readSafetensors(path));
}

/** Writes atomically (temp file beside `path`, fsync, rename) in the Rust crate's layout. */
export function writeSafetensors(path: string, tensors: Record<string, WritableTensor>, metadata?: Record<string, string>): void {
  call(() => native().writeSafetensors(path, tensors, metadata));
}

/** Converts raw tensor data (F16/BF16 bits, F64, I8, U8, F32) to a new Float32Array. */
export function toFloat32(dtype: ConvertibleDType, data: ArrayBufferView): Float32Array {
  return call(() => native().toFloat32(dtype, data));
}

/** A tensor's values as float32 (a copy), whatever its convertible dtype. */
export function tensorToFloat32(t: Tensor): Float32Array {
  return toFloat32(t.dtype as ConvertibleDType, t.data);
}
