/**
 * One error type for the whole platform. Every failure that crosses a boundary (HTTP,
 * CLI, CRD status) carries a stable `code` that clients may switch on, a human message
 * that says what to fix, and optional field-level details. HTTP renders it as RFC 9457
 * problem+json; the CLI maps the code's class to its exit status.
 */

/** Stable codes: never rename one, only add. The HTTP status is part of the contract. */
export const ERROR_CODES = {
  invalid_spec: 422,
  invalid_request: 400,
  invalid_file: 422,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** A problem with one field of an input, addressed the way kubectl prints it. */
export interface FieldError {
  path: string;
  message: string;
}

export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail: string;
  errors?: FieldError[];
}

export class LowrankError extends Error {
  readonly code: ErrorCode;
  readonly errors: FieldError[];

  constructor(code: ErrorCode, message: string, options: { errors?: FieldError[]; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'LowrankError';
    this.code = code;
    this.errors = options.errors ?? [];
  }

  get status(): number {
    return ERROR_CODES[this.code];
  }

  /** RFC 9457 body; `type` is a stable URI per code. */
  toProblem(): ProblemDetails {
    const problem: ProblemDetails = {
      type: `https://lowrank.dev/problems/${this.code}`,
      title: this.code.replaceAll('_', ' '),
      status: this.status,
      code: this.code,
      detail: this.message,
    };
    if (this.errors.length > 0) problem.errors = this.errors;
    return problem;
  }

  /** Multi-line text for terminals: the message, then one `path: message` per field. */
  toText(): string {
    return [this.message, ...this.errors.map((e) => `  ${e.path ? `${e.path}: ` : ''}${e.message}`)].join('\n');
  }
}

/** Wraps anything thrown into a LowrankError, keeping the original as `cause`. */
export function asLowrankError(err: unknown): LowrankError {
  if (err instanceof LowrankError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new LowrankError('internal', message, { cause: err });
}
