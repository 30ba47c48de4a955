/**
 * Loads the native core's Node addon (built by scripts/build-native). A missing build is
 * a clear error that says how to build it, never an opaque dlopen failure. Loading also
 * settles the compute backend (LOWRANK_BACKEND, see backend.ts).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import { createLogger } from '@lowrank/crds/log';
import { callNative } from './native-error.ts';

const addonPath = join(import.meta.dirname, '..', '..', 'native', 'build', 'Release', 'lowrank_native.node');

export interface NativeAddon {
  version: string;
  blas: string;
  [name: string]: unknown;
}

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  if (!existsSync(addonPath)) {
    throw new LowrankError('unavailable', `the native core is not built (${addonPath} is missing); run scripts/build-native`);
  }
  const addon = createRequire(import.meta.url)(addonPath) as NativeAddon;
  checkBackend(addon);
  cached = addon;
  return cached;
}

/**
 * LOWRANK_BACKEND=cuda that cannot be honoured is an error (asking for the GPU and
 * silently getting the CPU would hide a broken node); auto falling back to the CPU logs
 * one structured line saying why (on stderr, so stdout stays the job's).
 */
function checkBackend(addon: NativeAddon): void {
  if (typeof addon.backendInfo !== 'function') return;
  // An invalid LOWRANK_BACKEND throws here (invalid_request), before any op can run.
  const info = callNative(() => (addon.backendInfo as () => { requested?: string; backend?: string; reason?: string; library?: string })());
  if (info.requested === 'cpu' || info.backend !== 'cpu') return;
  if (info.requested === 'cuda') {
    throw new LowrankError('unavailable', `LOWRANK_BACKEND=cuda but the CUDA backend is unavailable: ${info.reason ?? 'unknown reason'}`);
  }
  createLogger('native', process.stderr).warn(
    { event: 'cuda_fallback', requested: info.requested, backend: 'cpu', reason: info.reason, library: info.library },
    'CUDA backend unavailable; running on the CPU',
  );
}
