/**
 * Calls into the native core and turns its Errors (which carry the core's `.code`) into
 * LowrankError: bad arguments and refused merges are the caller's to fix
 * (invalid_request), anything else is internal. TypeErrors from argument checks pass through.
 */
import { LowrankError } from '@lowrank/crds/errors';

const REQUEST_CODES = new Set(['invalid_argument', 'undefined_merge']);

export function toLowrankError(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof TypeError || err instanceof LowrankError) return err;
  const code = 'code' in err ? err.code : undefined;
  if (typeof code !== 'string') return err;
  return new LowrankError(REQUEST_CODES.has(code) ? 'invalid_request' : 'internal', err.message, { cause: err });
}

export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toLowrankError(err);
  }
}
