/**
 * Validates each request against its operation in the OpenAPI document (JSON Schema
 * 2020-12 through ajv): path and query parameters and the JSON body. Bad input is a
 * 400 problem listing every field that is wrong.
 */
import { type FieldError, LowrankError } from '@lowrank/crds/errors';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import type { RequestHandler } from 'express';
import { type Operation, openapiDocument } from './document.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ajv = new Ajv2020({ allErrors: true, strict: false, coerceTypes: false, formats: { uuid: UUID } });
ajv.addSchema({ $id: 'openapi.json', components: openapiDocument.components }, 'openapi.json');

/** `#/components/...` refs resolve inside the document. */
function rooted(schema: object): object {
  return JSON.parse(JSON.stringify(schema).replaceAll('"$ref":"#/', '"$ref":"openapi.json#/'));
}

function fieldErrors(prefix: string, errors: ErrorObject[] | null | undefined): FieldError[] {
  return (errors ?? []).map((e) => {
    const p = e.instancePath
      .split('/')
      .slice(1)
      .map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s.replaceAll('~1', '/').replaceAll('~0', '~')}`))
      .join('');
    const extra = e.keyword === 'additionalProperties' ? `: "${(e.params as { additionalProperty: string }).additionalProperty}"` : '';
    const field = e.keyword === 'required' ? `${prefix}${p}.${(e.params as { missingProperty: string }).missingProperty}` : `${prefix}${p}`;
    return { path: field, message: e.keyword === 'required' ? 'Required value' : `${e.message ?? e.keyword}${extra}` };
  });
}

export function requestValidator(op: Operation): RequestHandler {
  const paramSchema = (where: 'path' | 'query') => {
    const ps = op.parameters.filter((p) => p.in === where);
    return ajv.compile(
      rooted({
        type: 'object',
        properties: Object.fromEntries(ps.map((p) => [p.name, p.schema])),
        required: ps.filter((p) => p.required).map((p) => p.name),
        // Our own API refuses unknown query parameters; Hub clients send extras we ignore.
        ...(where === 'query' && op.path.startsWith('/v1/') ? { additionalProperties: false } : {}),
      }),
    );
  };
  const pathCheck = paramSchema('path');
  const queryCheck = paramSchema('query');
  const bodyCheck: ValidateFunction | undefined =
    op.requestSchema && op.requestContentType === 'application/json' ? ajv.compile(rooted(op.requestSchema)) : undefined;
  return (req, res, next) => {
    const params: Record<string, unknown> = { ...req.params };
    // Express 5 gives a wildcard as its segments; the document names it as one string.
    if (Array.isArray(params.path)) params.path = (params.path as string[]).join('/');
    const errors = [
      ...(pathCheck(params) ? [] : fieldErrors('path', pathCheck.errors)),
      ...(queryCheck(req.query ?? {}) ? [] : fieldErrors('query', queryCheck.errors)),
    ];
    if (bodyCheck) {
      if (!req.is('application/json')) {
        next(new LowrankError('invalid_request', 'send the body as JSON with Content-Type: application/json'));
        return;
      }
      if (!bodyCheck(req.body)) errors.push(...fieldErrors('body', bodyCheck.errors));
    }
    if (errors.length > 0) {
      next(new LowrankError('invalid_request', `the request does not match ${op.operationId} in /v1/openapi.json`, { errors }));
      return;
    }
    res.locals.params = params;
    next();
  };
}
