/**
 * Unknown-field detection exactly as the apiserver prunes (apiextensions-apiserver
 * schema/pruning with TrackUnknownFieldPaths), which is what `kubectl apply
 * --validate=strict` reports: every key the schema does not declare is an error and is
 * removed before validation; a value of the wrong shape has all its keys reported.
 */
import type { FieldError } from './errors.ts';
import type { SchemaNode } from './schema-node.ts';

const META_FIELDS = new Set(['apiVersion', 'kind', 'metadata']);

function join(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === '' ? key : `${path}.${key}`;
}

/** Removes undeclared keys from `value` in place and returns one error per key. */
export function pruneUnknown(value: unknown, node: SchemaNode | undefined, path = '', errors: FieldError[] = []): FieldError[] {
  if (node?.['x-kubernetes-preserve-unknown-fields']) return errors;
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      pruneUnknown(item, node?.items, join(path, i), errors);
    });
    return errors;
  }
  if (!value || typeof value !== 'object') return errors;
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    const prop = node?.properties?.[key];
    const child = prop ?? (node && typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined);
    if (path === '' && key === 'metadata') continue; // ObjectMeta: the apiserver's own rules
    if (node && child) {
      pruneUnknown(obj[key], child, join(path, key), errors);
      continue;
    }
    if (!(path === '' && META_FIELDS.has(key))) {
      const p = join(path, key);
      errors.push({ path: p, message: `unknown field "${p}"` });
    }
    delete obj[key];
  }
  return errors;
}
