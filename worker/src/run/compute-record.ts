/**
 * What computed a version (METHODS §8.2: a version records its library versions, so a
 * rerun from lineage can tell whether it ran on the same stack): the native core's version,
 * the backend, and with CUDA the device, the GEMM library and the SVD library (cuBLAS and
 * cuSOLVER with their versions, or why the tiled kernel / LAPACK ran), plus the CPU BLAS
 * build. Stored as the version's methodMetadata.compute.
 */
import { backendInfo } from '../native/backend.ts';
import { loadNative } from '../native/load.ts';

export interface ComputeRecord {
  core: string;
  backend: 'cpu' | 'cuda';
  device?: string;
  gemm?: string;
  svd?: string;
  /** OpenBLAS's build configuration (threading model, target CPU). */
  blas: string;
}

export function computeRecord(): ComputeRecord {
  const addon = loadNative();
  const info = backendInfo();
  return {
    core: addon.version,
    backend: info.backend,
    ...(info.device ? { device: info.device } : {}),
    ...(info.gemm ? { gemm: info.gemm } : {}),
    ...(info.svd ? { svd: info.svd } : {}),
    blas: addon.blas,
  };
}
