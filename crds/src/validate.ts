/**
 * The one validator behind all three front doors (REST body, `lora-worker` CLI and the
 * operator). It does what the apiserver does with a CRD, in the same order and wording:
 * drop nulls on non-nullable fields, apply defaults, check the structural schema
 * (strictly: unknown fields are errors, as `kubectl apply --validate=strict`), then the
 * `x-kubernetes-validations` CEL rules and list-type uniqueness.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { crds, type JobKind } from '../gen/schemas.ts';
import type { JobResource } from '../gen/types.ts';
import { evaluateRule, isTransitionRule } from './cel.ts';
import { type FieldError, LowrankError } from './errors.ts';
import { formatPath, pointerToSegments, type Segment } from './field-path.ts';
import { jsonType, schemaMessage, showValue } from './messages.ts';
import { pruneUnknown } from './prune.ts';
import type { SchemaNode } from './schema-node.ts';

export type { JobKind };
export const JOB_KINDS = Object.keys(crds) as JobKind[];

export type ValidationResult<T> = { ok: true; value: T; errors: [] } | { ok: false; errors: FieldError[] };

const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** OpenAPI v3.0 `exclusiveMinimum: true` becomes JSON Schema's numeric form for ajv. */
function forAjv(node: SchemaNode): object {
  const out: Record<string, unknown> = { ...node };
  if (node.exclusiveMinimum === true) {
    out.exclusiveMinimum = node.minimum;
    delete out.minimum;
  } else if (node.exclusiveMinimum === false) delete out.exclusiveMinimum;
  if (node.exclusiveMaximum === true) {
    out.exclusiveMaximum = node.maximum;
    delete out.maximum;
  } else if (node.exclusiveMaximum === false) delete out.exclusiveMaximum;
  if (node.properties) {
    out.properties = Object.fromEntries(Object.entries(node.properties).map(([k, v]) => [k, forAjv(v)]));
  }
  if (node.items) out.items = forAjv(node.items);
  if (typeof node.additionalProperties === 'object') out.additionalProperties = forAjv(node.additionalProperties);
  // Descriptions are long; ajv does not need them.
  delete out.description;
  return out;
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
ajv.addKeyword({
  keyword: 'x-kubernetes-int-or-string',
  schemaType: 'boolean',
  validate: (on: boolean, data: unknown) => !on || typeof data === 'string' || Number.isInteger(data),
  errors: false,
});
const compiled = new Map<JobKind, ValidateFunction>();
function validatorFor(kind: JobKind): ValidateFunction {
  let v = compiled.get(kind);
  if (!v) {
    v = ajv.compile(forAjv(crds[kind].schema));
    compiled.set(kind, v);
  }
  return v;
}

/** The apiserver prunes nulls on fields that are not nullable before defaulting. */
function dropNulls(value: unknown, node: SchemaNode | undefined): unknown {
  if (!node || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => dropNulls(v, node.items));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const child = node.properties?.[k] ?? (typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined);
    if (v === null && child && !child.nullable) continue;
    out[k] = dropNulls(v, child);
  }
  return out;
}

function at(data: unknown, segments: readonly Segment[]): unknown {
  let cur = data;
  for (const s of segments) cur = cur && typeof cur === 'object' ? (cur as Record<string | number, unknown>)[s] : undefined;
  return cur;
}

interface SchemaErrors {
  fieldErrors: FieldError[];
  /** Where the schema found anything wrong. */
  errorPointers: string[];
  /** An error of a kind after which the apiserver does not evaluate CEL rules. */
  blocking: boolean;
}

/** ajv keywords whose kube error types (Required, NotSupported, TooLong, TooMany, TypeInvalid) block CEL. */
const BLOCKING = new Set(['required', 'enum', 'maxLength', 'maxItems', 'maxProperties', 'type', 'x-kubernetes-int-or-string']);
export const CEL_SKIPPED = {
  path: '',
  message:
    'Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation',
};

function schemaErrors(data: unknown, errors: ErrorObject[]): SchemaErrors {
  const seen = new Set<string>();
  // go-openapi checks a string's maxLength, minLength and pattern in turn and stops at the first failure.
  const failed = new Set(errors.map((e) => `${e.instancePath}\u0000${e.keyword}`));
  const shadowed = (e: ErrorObject) =>
    (e.keyword === 'minLength' && failed.has(`${e.instancePath}\u0000maxLength`)) ||
    (e.keyword === 'pattern' && (failed.has(`${e.instancePath}\u0000maxLength`) || failed.has(`${e.instancePath}\u0000minLength`)));
  const fieldErrors: FieldError[] = [];
  for (const e of errors) {
    if (shadowed(e)) continue;
    const segments = pointerToSegments(data, e.instancePath);
    const params = e.params as Record<string, string>;
    if (e.keyword === 'required') segments.push(params.missingProperty ?? '');
    if (e.keyword === 'additionalProperties') segments.push(params.additionalProperty ?? '');
    const path = formatPath(segments);
    const message = schemaMessage(e, path, at(data, segments));
    const key = `${path}\u0000${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    fieldErrors.push({ path, message });
  }
  return {
    fieldErrors,
    errorPointers: errors.map((e) => e.instancePath),
    blocking: errors.some((e) => BLOCKING.has(e.keyword)),
  };
}

interface WalkContext {
  schema: SchemaErrors;
  errors: FieldError[];
}

const within = (pointers: string[], pointer: string) => pointers.some((p) => p === pointer || p.startsWith(`${pointer}/`));

function pointerOf(segments: readonly Segment[]): string {
  return segments.map((s) => `/${String(s).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

function celFailure(node: SchemaNode, rule: { message?: string; rule: string; reason?: string }): string {
  const message = rule.message ?? `failed rule: ${rule.rule}`;
  switch (rule.reason) {
    case 'FieldValueForbidden':
      return `Forbidden: ${message}`;
    case 'FieldValueRequired':
      return `Required value: ${message}`;
    case 'FieldValueDuplicate':
      return `Duplicate value: ${message}`;
    default:
      return `Invalid value: "${node.type ?? 'object'}": ${message}`;
  }
}

/** CEL rules and list-type uniqueness, node by node, correlating `oldSelf` like the apiserver. */
function walk(ctx: WalkContext, node: SchemaNode, value: unknown, old: unknown, segments: Segment[]): void {
  if (value === undefined) return;
  const pointer = pointerOf(segments);
  // Like the apiserver, CEL runs only on objects without blocking schema errors.
  for (const rule of ctx.schema.blocking ? [] : (node['x-kubernetes-validations'] ?? [])) {
    if (isTransitionRule(rule.rule) && old === undefined) continue;
    const outcome = evaluateRule(rule.rule, value, old, node);
    if (outcome.ok) continue;
    // e.g. "no such key" on a missing required field: reported once, by the schema.
    if (outcome.evaluationError && within(ctx.schema.errorPointers, pointer)) continue;
    const fieldSegments = rule.fieldPath ? [...segments, ...rule.fieldPath.replace(/^\./, '').split('.')] : segments;
    const path = formatPath(fieldSegments);
    const message = outcome.evaluationError
      ? `Invalid value: "${node.type ?? 'object'}": rule ${JSON.stringify(rule.rule)} could not be evaluated: ${outcome.evaluationError}`
      : celFailure(node, rule);
    ctx.errors.push({ path, message });
  }
  if (Array.isArray(value) && node.items) {
    listUniqueness(ctx, node, value, segments);
    const keys = node['x-kubernetes-list-type'] === 'map' ? (node['x-kubernetes-list-map-keys'] ?? []) : undefined;
    value.forEach((item, i) => {
      const oldItem = keys && Array.isArray(old) ? old.find((o) => sameKeys(o, item, keys)) : undefined;
      walk(ctx, node.items as SchemaNode, item, oldItem, [...segments, i]);
    });
    return;
  }
  if (value && typeof value === 'object') {
    const oldObj = old && typeof old === 'object' ? (old as Record<string, unknown>) : undefined;
    for (const [k, v] of Object.entries(value)) {
      const child = node.properties?.[k] ?? (typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined);
      if (child) walk(ctx, child, v, oldObj?.[k], [...segments, k]);
    }
  }
}

function sameKeys(a: unknown, b: unknown, keys: string[]): boolean {
  if (!a || !b || typeof a !== 'object' || typeof b !== 'object') return false;
  return keys.every((k) => (a as Record<string, unknown>)[k] === (b as Record<string, unknown>)[k]);
}

function listUniqueness(ctx: WalkContext, node: SchemaNode, value: unknown[], segments: Segment[]): void {
  const listType = node['x-kubernetes-list-type'];
  if (listType !== 'set' && listType !== 'map') return;
  const keys = node['x-kubernetes-list-map-keys'] ?? [];
  const seen = new Set<string>();
  value.forEach((item, i) => {
    const id =
      listType === 'set'
        ? JSON.stringify(item)
        : JSON.stringify(Object.fromEntries(keys.map((k) => [k, (item as Record<string, unknown>)?.[k]])));
    if (seen.has(id)) {
      const shown = listType === 'set' ? showValue(item) : id;
      ctx.errors.push({ path: formatPath([...segments, i]), message: `Duplicate value: ${shown}` });
    }
    seen.add(id);
  });
}

function checkEnvelope(input: Record<string, unknown>): { kind?: JobKind; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const kinds = JOB_KINDS.map((k) => JSON.stringify(k)).join(', ');
  const kind = JOB_KINDS.find((k) => k === input.kind);
  if (input.kind === undefined) errors.push({ path: 'kind', message: 'Required value' });
  else if (!kind) errors.push({ path: 'kind', message: `Unsupported value: ${JSON.stringify(input.kind)}: supported values: ${kinds}` });
  if (kind) {
    const want = `${crds[kind].group}/${crds[kind].version}`;
    if (input.apiVersion === undefined) errors.push({ path: 'apiVersion', message: 'Required value' });
    else if (input.apiVersion !== want) {
      errors.push({ path: 'apiVersion', message: `Unsupported value: ${JSON.stringify(input.apiVersion)}: supported values: "${want}"` });
    }
  }
  const meta = input.metadata;
  if (meta === undefined || meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
    errors.push({
      path: 'metadata',
      message: meta === undefined ? 'Required value' : `Invalid value: "${jsonType(meta)}": metadata must be an object`,
    });
  } else {
    const { name, generateName } = meta as Record<string, unknown>;
    if (name === undefined && generateName === undefined) {
      errors.push({ path: 'metadata.name', message: 'Required value: name or generateName is required' });
    } else if (name !== undefined && (typeof name !== 'string' || name.length > 253 || !NAME_RE.test(name))) {
      errors.push({
        path: 'metadata.name',
        message: `Invalid value: ${showValue(name)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '${NAME_RE.source.slice(1, -1)}')`,
      });
    }
  }
  return { kind, errors };
}

export interface ValidateOptions {
  /** The stored object, on update: enables transition rules (`oldSelf`). */
  old?: unknown;
}

/**
 * Validates a whole custom resource (apiVersion, kind, metadata, spec, status). Returns
 * the defaulted copy on success; the input is never modified.
 */
export function validateResource(input: unknown, options: ValidateOptions = {}): ValidationResult<JobResource> {
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    return {
      ok: false,
      errors: [
        { path: '', message: `Invalid value: "${jsonType(input)}": a job must be an object with apiVersion, kind, metadata and spec` },
      ],
    };
  }
  const envelope = checkEnvelope(input as Record<string, unknown>);
  if (!envelope.kind) return { ok: false, errors: envelope.errors };
  const kind = envelope.kind;
  const schema = crds[kind].schema;
  const data = dropNulls(structuredClone(input), schema);
  const unknown = pruneUnknown(data, schema);
  const validate = validatorFor(kind);
  validate(data);
  const found = schemaErrors(data, validate.errors ?? []);
  const ctx: WalkContext = { schema: found, errors: [] };
  // The stored object was defaulted when it was written; compare like with like.
  let old: unknown;
  if (options.old !== undefined) {
    old = dropNulls(structuredClone(options.old), schema);
    pruneUnknown(old, schema);
    validate(old);
  }
  walk(ctx, schema, data, old, []);
  const errors = [...envelope.errors, ...unknown, ...found.fieldErrors.filter((e) => !e.path.startsWith('metadata')), ...ctx.errors];
  if (found.blocking) errors.push(CEL_SKIPPED);
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: data as JobResource, errors: [] };
}

/** Validates just a spec of the given kind; error paths still start at `spec`. */
export function validateSpec(kind: JobKind, spec: unknown, options: { oldSpec?: unknown } = {}): ValidationResult<unknown> {
  const wrap = (s: unknown) => ({ apiVersion: `${crds[kind].group}/${crds[kind].version}`, kind, metadata: { name: 'spec' }, spec: s });
  const result = validateResource(wrap(spec), options.oldSpec === undefined ? {} : { old: wrap(options.oldSpec) });
  return result.ok ? { ok: true, value: (result.value as { spec: unknown }).spec, errors: [] } : result;
}

/** Like validateResource, but throws a LowrankError(`invalid_spec`) naming every problem. */
export function parseResource(input: unknown, options: ValidateOptions = {}): JobResource {
  const result = validateResource(input, options);
  if (result.ok) return result.value;
  const what =
    input && typeof input === 'object' && typeof (input as { kind?: unknown }).kind === 'string' ? (input as { kind: string }).kind : 'job';
  throw new LowrankError('invalid_spec', `${what} is invalid: ${problemCount(result.errors)}`, { errors: result.errors });
}

/** "2 problems to fix", not counting the note that CEL rules were skipped. */
export function problemCount(errors: FieldError[]): string {
  const n = errors.filter((e) => e.message !== CEL_SKIPPED.message).length;
  return `${n} problem${n === 1 ? '' : 's'} to fix`;
}

export function crdInfo(kind: JobKind) {
  return crds[kind];
}
