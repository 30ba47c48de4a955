/**
 * Field paths as the apiserver prints them for custom resources: keys joined by dots
 * (map keys too), list indices in brackets: `spec.inputs[1].weight`.
 */
export type Segment = string | number;

export function formatPath(segments: readonly Segment[]): string {
  let out = '';
  for (const seg of segments) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
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
