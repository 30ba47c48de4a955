/**
 * Loads the native core's Node addon (built by scripts/build-native). A missing build is
 * a clear error that says how to build it, never an opaque dlopen failure.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';

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
  cached = createRequire(import.meta.url)(addonPath) as NativeAddon;
  return cached;
}
