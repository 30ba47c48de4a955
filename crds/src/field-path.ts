/** Field paths in kubectl's notation: `spec.inputs[1].weight`, map keys as `[key]`. */
import type { SchemaNode } from './schema-node.ts';

export type Segment = string | number;

/** Renders segments, using the schema to tell declared properties from map keys. */
export function formatPath(schema: SchemaNode, segments: readonly Segment[]): string {
  let out = '';
  let node: SchemaNode | undefined = schema;
  for (const seg of segments) {
    if (typeof seg === 'number') {
      out += `[${seg}]`;
      node = node?.items;
    } else if (node?.properties && seg in node.properties) {
      out += out === '' ? seg : `.${seg}`;
      node = node.properties[seg];
    } else if (node && typeof node.additionalProperties === 'object') {
      out += `[${seg}]`;
      node = node.additionalProperties;
    } else {
      out += out === '' ? seg : `.${seg}`;
      node = undefined;
    }
  }
  return out;
}

/** JSON pointer (ajv's instancePath) to segments, numbers where the data is an array. */
export function pointerToSegments(data: unknown, pointer: string): Segment[] {
  if (pointer === '') return [];
  const segments: Segment[] = [];
  let cur: unknown = data;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(cur)) {
      const i = Number(key);
      segments.push(i);
      cur = cur[i];
    } else {
      segments.push(key);
      cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[key] : undefined;
    }
  }
  return segments;
}
