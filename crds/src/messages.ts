/**
 * Kubernetes' wording for schema errors (k8s.io/kube-openapi validate + apiextensions),
 * so that the REST API, the CLI and `kubectl apply` tell users the same thing.
 */
import type { ErrorObject } from 'ajv';

export function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

/** How kubectl prints a bad value: strings quoted, numbers bare, composites by type. */
export function showValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(jsonType(value));
}

/** Message for one ajv error at `path` whose offending value is `value`. */
export function schemaMessage(err: ErrorObject, path: string, value: unknown): string {
  const p = err.params as Record<string, unknown>;
  const invalid = (what: string) => `Invalid value: ${showValue(value)}: ${path} in body ${what}`;
  switch (err.keyword) {
    case 'required':
      return 'Required value';
    case 'additionalProperties':
      return `unknown field "${path}"`;
    case 'enum':
      return `Unsupported value: ${JSON.stringify(value)}: supported values: ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(typeof v === 'string' ? v : JSON.stringify(v))).join(', ')}`;
    case 'type': {
      const t = jsonType(value);
      return `Invalid value: "${t}": ${path} in body must be of type ${String(p.type)}: "${t}"`;
    }
    case 'minimum':
      return invalid(`should be greater than or equal to ${String(p.limit)}`);
    case 'maximum':
      return invalid(`should be less than or equal to ${String(p.limit)}`);
    case 'exclusiveMinimum':
      return invalid(`should be greater than ${String(p.limit)}`);
    case 'exclusiveMaximum':
      return invalid(`should be less than ${String(p.limit)}`);
    case 'minLength':
      return invalid(`should be at least ${String(p.limit)} chars long`);
    case 'maxLength':
      return `Too long: may not be more than ${String(p.limit)} bytes`;
    case 'pattern':
      return invalid(`should match '${String(p.pattern)}'`);
    case 'minItems':
      return `Invalid value: ${(value as unknown[]).length}: ${path} in body should have at least ${String(p.limit)} items`;
    case 'maxItems':
      return `Too many: ${(value as unknown[]).length}: must have at most ${String(p.limit)} items`;
    case 'minProperties':
      return `Invalid value: ${Object.keys(value as object).length}: ${path} in body should have at least ${String(p.limit)} properties`;
    case 'maxProperties':
      return `Too many: ${Object.keys(value as object).length}: must have at most ${String(p.limit)} items`;
    case 'x-kubernetes-int-or-string':
      return `Invalid value: "${jsonType(value)}": ${path} in body must be of type integer,string: "${jsonType(value)}"`;
    default:
      return `Invalid value: ${showValue(value)}: ${err.message ?? err.keyword}`;
  }
}
