/**
 * The ICM-LoRA generator's native math (worker/native/src/generate/cvae.h): a GEMM-only
 * MLP conditional VAE, its forward/backward, seeded AdamW training with a cosine
 * schedule, encoder and decoder. Parameters are 8 Float32Arrays in PyTorch Linear layout
 * (out x in), in CVAE_PARAM_NAMES order.
 */
import { LowrankError } from '@lowrank/crds/errors';
import { loadNative } from './load.ts';

export const CVAE_PARAM_NAMES = ['enc.w1', 'enc.b1', 'enc.w2', 'enc.b2', 'dec.w3', 'dec.b3', 'dec.w4', 'dec.b4'] as const;

export interface CvaeDims {
  /** D': the padded flattened adapter length. */
  input: number;
  /** C: the condition (embedding) size. */
  cond: number;
  hidden: number;
  latent: number;
}

export type CvaeParams = Float32Array[];

export interface CvaeLoss {
  mse: number;
  kl: number;
  total: number;
}

export interface CvaeState {
  params: CvaeParams;
  m: CvaeParams;
  v: CvaeParams;
  step: number;
}

export interface CvaeTrainOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** KL weight β. */
  beta: number;
  totalSteps: number;
  steps: number;
  seed: number | bigint;
}

interface CvaeNative {
  cvaeInit(d: CvaeDims, seed: number | bigint): CvaeParams;
  cvaeForwardBackward(
    d: CvaeDims,
    p: CvaeParams,
    n: number,
    x: Float32Array,
    c: Float32Array,
    eps: Float32Array,
    beta: number,
  ): CvaeLoss & { grads: CvaeParams };
  cvaeTrain(
    d: CvaeDims,
    s: CvaeState,
    n: number,
    x: Float32Array,
    c: Float32Array,
    o: CvaeTrainOptions,
  ): { losses: CvaeLoss[]; step: number };
  cvaeEncode(d: CvaeDims, p: CvaeParams, n: number, x: Float32Array, c: Float32Array): { mu: Float32Array; logvar: Float32Array };
  cvaeDecode(d: CvaeDims, p: CvaeParams, n: number, z: Float32Array, c: Float32Array): Float32Array;
}

const native = () => loadNative() as unknown as CvaeNative;

function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code === 'invalid_argument') throw new LowrankError('invalid_request', e.message);
    throw err;
  }
}

/** Element counts of each parameter, CVAE_PARAM_NAMES order. */
export function cvaeParamSizes(d: CvaeDims): number[] {
  const { input: D, cond: C, hidden: H, latent: L } = d;
  return [H * D, H, 2 * L * (H + C), 2 * L, H * (L + C), H, D * H, D];
}

export const cvaeInit = (d: CvaeDims, seed: number | bigint): CvaeParams => call(() => native().cvaeInit(d, seed));

export function cvaeForwardBackward(
  d: CvaeDims,
  p: CvaeParams,
  n: number,
  x: Float32Array,
  c: Float32Array,
  eps: Float32Array,
  beta: number,
): CvaeLoss & { grads: CvaeParams } {
  return call(() => native().cvaeForwardBackward(d, p, n, x, c, eps, beta));
}

/** Runs o.steps AdamW steps (fewer at o.totalSteps); updates state in place. */
export function cvaeTrain(d: CvaeDims, s: CvaeState, n: number, x: Float32Array, c: Float32Array, o: CvaeTrainOptions): CvaeLoss[] {
  return call(() => native().cvaeTrain(d, s, n, x, c, o)).losses;
}

export const cvaeEncode = (d: CvaeDims, p: CvaeParams, n: number, x: Float32Array, c: Float32Array) =>
  call(() => native().cvaeEncode(d, p, n, x, c));

export const cvaeDecode = (d: CvaeDims, p: CvaeParams, n: number, z: Float32Array, c: Float32Array): Float32Array =>
  call(() => native().cvaeDecode(d, p, n, z, c));
