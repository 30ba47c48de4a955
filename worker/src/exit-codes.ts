/**
 * lora-worker's exit statuses. The operator and the local executor read them to decide
 * whether a retry can help: bad input never is retried, a retryable failure is.
 */
export const EXIT = {
  ok: 0,
  /** Unexpected internal error (a bug): retried within the retry policy. */
  internal: 70,
  /** The spec or an input file is wrong; fixing it, not retrying, helps (sysexits EX_DATAERR). */
  badInput: 65,
  /** Usage error: unknown command or flag (sysexits EX_USAGE). */
  usage: 64,
  /** Transient failure (network, registry unavailable): retry (sysexits EX_TEMPFAIL). */
  retryable: 75,
} as const;
