/**
 * The part of a job kind's OpenAPI v3 schema (GET /v1/schemas/{kind}, the CRD's own) that the
 * form generator reads, narrowed from JSON, and how a form's raw inputs become a spec.
 */

export interface SchemaNode {
  type: string | null;
  description: string;
  properties: [string, SchemaNode][];
  required: string[];
  enum: (string | number)[] | null;
  items: SchemaNode | null;
  default: unknown;
  /** A map (additionalProperties) or free-form object: edited as JSON. */
  freeForm: boolean;
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

export function readSchema(x: unknown): SchemaNode {
  const o = isRecord(x) ? x : {};
  const props = isRecord(o.properties) ? Object.entries(o.properties).map(([k, v]): [string, SchemaNode] => [k, readSchema(v)]) : [];
  return {
    type: typeof o.type === 'string' ? o.type : null,
    description: typeof o.description === 'string' ? o.description : '',
    properties: props,
    required: Array.isArray(o.required) ? o.required.filter((r): r is string => typeof r === 'string') : [],
    enum: Array.isArray(o.enum) ? o.enum.filter((e): e is string | number => typeof e === 'string' || typeof e === 'number') : null,
    items: o.items === undefined ? null : readSchema(o.items),
    default: o.default,
    freeForm: o.type === 'object' && props.length === 0,
  };
}

/** How a node is edited. */
export type Widget = 'object' | 'select' | 'boolean' | 'number' | 'text' | 'multi' | 'list' | 'json';

export function widgetOf(n: SchemaNode): Widget {
  if (n.type === 'object') return n.freeForm ? 'json' : 'object';
  if (n.enum) return 'select';
  if (n.type === 'boolean') return 'boolean';
  if (n.type === 'integer' || n.type === 'number') return 'number';
  if (n.type === 'array') {
    if (n.items?.enum) return 'multi';
    if (n.items && ['string', 'integer', 'number'].includes(n.items.type ?? '')) return 'list';
    return 'json';
  }
  return 'text';
}

/** Raw form values by field path ("spec.method.rank"); multi-selects hold string arrays. */
export type RawValues = Record<string, string | string[]>;

const numberOr = (s: string): number | string => (s.trim() !== '' && Number.isFinite(Number(s)) ? Number(s) : s);

/**
 * The value for a node from the raw inputs, or undefined when nothing was filled in. Values
 * that do not parse are sent as typed, so the server's validation names what is wrong.
 */
export function buildValue(n: SchemaNode, path: string, raw: RawValues): unknown {
  const w = widgetOf(n);
  const v = raw[path];
  switch (w) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const [k, child] of n.properties) {
        const x = buildValue(child, `${path}.${k}`, raw);
        if (x !== undefined) out[k] = x;
      }
      return Object.keys(out).length > 0 ? out : undefined;
    }
    case 'multi':
      return Array.isArray(v) && v.length > 0 ? v.map((s) => (n.items?.type === 'string' ? s : numberOr(s))) : undefined;
    case 'list': {
      if (typeof v !== 'string' || v.trim() === '') return undefined;
      const parts = v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      return n.items?.type === 'string' ? parts : parts.map(numberOr);
    }
    case 'json':
      if (typeof v !== 'string' || v.trim() === '') return undefined;
      try {
        return JSON.parse(v);
      } catch {
        return v;
      }
    case 'boolean':
      return v === 'true' ? true : v === 'false' ? false : undefined;
    case 'number':
      return typeof v === 'string' && v.trim() !== '' ? numberOr(v) : undefined;
    case 'select':
      return typeof v === 'string' && v !== '' ? (n.type === 'string' ? v : numberOr(v)) : undefined;
    default:
      return typeof v === 'string' && v !== '' ? v : undefined;
  }
}

/** The spec object from the form (empty when nothing was filled in). */
export function buildSpec(spec: SchemaNode, raw: RawValues): Record<string, unknown> {
  const v = buildValue(spec, 'spec', raw);
  return isRecord(v) ? v : {};
}
