/**
 * The compute backend of the native core (METHODS §7; docs/cuda.md): which one runs
 * (LOWRANK_BACKEND = cpu | cuda | auto, auto by default) and the ops both backends
 * implement with one C API (worker/native/include/lowrank/backend_ops.h). The CUDA
 * backend is a separate library the addon loads at run time; without it, a driver or a
 * device, `auto` falls back to the CPU and `cuda` is an error (load.ts: one log line, or the error).
 */
import { LowrankError } from '@lowrank/crds/errors';
import { loadNative } from './load.ts';
import { callNative } from './native-error.ts';

export interface BackendInfo {
  requested: 'cpu' | 'cuda' | 'auto';
  backend: 'cpu' | 'cuda';
  cudaAvailable: boolean;
  /** Why the CPU runs although CUDA was wanted. */
  reason?: string;
  /** The GPU, when CUDA runs: name and compute capability. */
  device?: string;
  /** The CUDA library that was tried. */
  library?: string;
  /** When CUDA runs: what runs its GEMMs (cuBLAS and its version and matmul precision, or the tiled kernel and why). */
  gemm?: string;
  /** When CUDA runs: what runs the exact SVDs of merges and compressions (cuSOLVER and its version, or the CPU's LAPACK and why). */
  svd?: string;
  /** When CUDA runs: device bytes the CUDA library holds now, and their peak so far (cudaMalloc'd buffers only). */
  deviceBytes?: number;
  deviceBytesPeak?: number;
}

/** Which table an op runs on: one backend by name, or the resolved one. */
export type BackendName = 'cpu' | 'cuda' | 'active';

export interface LoraForwardArgs {
  n: number;
  in: number;
  out: number;
  r: number;
  scale: number;
  x: Float32Array;
  /** W [out, in]: fp32, or the raw bits of bf16 values. */
  w: Float32Array | Uint16Array;
  a: Float32Array;
  b: Float32Array;
}
export interface LoraBackwardArgs extends LoraForwardArgs {
  h: Float32Array;
  dy: Float32Array;
  ga: Float32Array;
  gb: Float32Array;
}
export interface AdamWArgs {
  n: number;
  p: Float32Array;
  g: Float32Array;
  m: Float32Array;
  v: Float32Array;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}
export interface RmsNormArgs {
  n: number;
  d: number;
  eps: number;
  x: Float32Array;
  w: Float32Array;
}
export interface RopeArgs {
  n: number;
  heads: number;
  headDim: number;
  npos: number;
  x: Float32Array;
  pos: Int32Array;
  cos: Float32Array;
  sin: Float32Array;
  inverse: boolean;
}
export interface AttentionArgs {
  T: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}
export interface FactorSumArgs {
  out: number;
  in: number;
  terms: { r: number; a: Float32Array; b: Float32Array; weight: number }[];
}

export interface CrossEntropyArgs {
  n: number;
  vocab: number;
  logits: Float32Array;
  /** -100: ignored (loss 0, zero gradient). */
  labels: Int32Array;
  scale: number;
}
export interface DropoutMaskArgs {
  seed: number | bigint;
  stream: number | bigint;
  offset: number | bigint;
  n: number;
  p: number;
}

/** The ops of backend_ops.h; each copies its inputs and returns new arrays. */
export interface BackendOps {
  loraForward(backend: BackendName, args: LoraForwardArgs): { y: Float32Array; h: Float32Array };
  loraBackward(backend: BackendName, args: LoraBackwardArgs): { dx: Float32Array; ga: Float32Array; gb: Float32Array };
  adamw(backend: BackendName, args: AdamWArgs): { p: Float32Array; m: Float32Array; v: Float32Array };
  rmsnorm(backend: BackendName, args: RmsNormArgs): { y: Float32Array; rstd: Float32Array };
  rope(backend: BackendName, args: RopeArgs): { x: Float32Array };
  swiglu(backend: BackendName, args: { n: number; gate: Float32Array; up: Float32Array }): { act: Float32Array };
  attention(backend: BackendName, args: AttentionArgs): { out: Float32Array };
  factorSum(backend: BackendName, args: FactorSumArgs): { delta: Float32Array };
  rmsnormBackward(
    backend: BackendName,
    args: Omit<RmsNormArgs, 'eps'> & { rstd: Float32Array; dy: Float32Array; dx: Float32Array; accumulate: boolean },
  ): { dx: Float32Array };
  swigluBackward(
    backend: BackendName,
    args: { n: number; gate: Float32Array; up: Float32Array; dact: Float32Array },
  ): { dgate: Float32Array; dup: Float32Array };
  crossEntropy(backend: BackendName, args: CrossEntropyArgs): { loss: Float32Array; dlogits: Float32Array };
  dropoutMask(backend: BackendName, args: DropoutMaskArgs): { mask: Float32Array };
  attentionBackward(
    backend: BackendName,
    args: AttentionArgs & { dout: Float32Array },
  ): { dq: Float32Array; dk: Float32Array; dv: Float32Array };
}

function isBackendInfo(v: unknown): v is BackendInfo {
  return typeof v === 'object' && v !== null && 'backend' in v && 'requested' in v;
}

/** The resolution (once per process); LowrankError('invalid_request') for a bad LOWRANK_BACKEND. */
export function backendInfo(): BackendInfo {
  const addon = loadNative();
  if (typeof addon.backendInfo !== 'function') throw new LowrankError('internal', 'the native addon predates backendInfo(); rebuild it');
  const info: unknown = callNative(() => (addon.backendInfo as () => unknown)());
  if (!isBackendInfo(info)) throw new LowrankError('internal', 'backendInfo() returned an unexpected value');
  return info;
}

/** The ops; errors carry the core's code (invalid_argument, device_error, backend_unavailable). */
export function backendOps(): BackendOps {
  const ops = loadNative().backendOps;
  if (typeof ops !== 'object' || ops === null) throw new LowrankError('internal', 'the native addon has no backendOps; rebuild it');
  return ops as BackendOps;
}
