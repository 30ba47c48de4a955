/** Problems (RFC 9457 bodies with our stable code) from whatever a failed call gave back. */
import type { Problem } from './client.ts';

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;

export function isProblem(x: unknown): x is Problem {
  return isRecord(x) && typeof x.code === 'string' && typeof x.status === 'number' && typeof x.detail === 'string';
}

/** The problem body when there is one; otherwise one made from the HTTP status or the thrown error. */
export function toProblem(error: unknown, response?: Response): Problem {
  if (isProblem(error)) return error;
  if (response) {
    const status = response.status;
    const code = status === 401 ? 'unauthorized' : status === 403 ? 'forbidden' : status === 404 ? 'not_found' : 'internal';
    return { type: 'about:blank', title: response.statusText || `HTTP ${status}`, status, code, detail: `the registry answered ${status}` };
  }
  const detail = error instanceof Error ? error.message : String(error);
  return { type: 'about:blank', title: 'Registry unreachable', status: 0, code: 'unavailable', detail };
}
