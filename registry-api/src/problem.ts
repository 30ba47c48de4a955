/** Express glue that renders every error as RFC 9457 problem+json. */
import { asLowrankError, LowrankError } from '@lowrank/crds/errors';
import type { Logger } from '@lowrank/crds/log';
import type { ErrorRequestHandler, RequestHandler, Response } from 'express';

export function sendProblem(res: Response, err: LowrankError): void {
  res.status(err.status).type('application/problem+json').send(JSON.stringify(err.toProblem()));
}

export const notFound: RequestHandler = (req, res) => {
  sendProblem(res, new LowrankError('not_found', `no route for ${req.method} ${req.path}; see /v1/openapi.json`));
};

/** Maps body-parser failures to client errors; anything unknown is a logged 500. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const e = err as { type?: string; status?: number; message?: string };
    let problem: LowrankError;
    if (e?.type === 'entity.parse.failed') problem = new LowrankError('invalid_request', `request body is not valid JSON: ${e.message}`);
    else if (e?.type === 'entity.too.large') problem = new LowrankError('payload_too_large', 'request body is larger than the 1 MiB limit');
    else if (e?.type === 'charset.unsupported' || e?.type === 'encoding.unsupported') {
      problem = new LowrankError('invalid_request', e.message ?? 'unsupported body encoding');
    } else problem = asLowrankError(err);
    if (problem.status >= 500) log.error({ err, method: req.method, path: req.path }, 'request failed');
    if (res.headersSent) {
      // Mid-body (e.g. a blob found corrupt while streaming): abort, so the client sees a failed transfer, not a short file.
      res.destroy(problem);
      return;
    }
    sendProblem(res, problem);
  };
}
