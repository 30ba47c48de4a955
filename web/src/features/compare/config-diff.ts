/** A flat diff of two JSON documents: one row per leaf path, marked same, changed, added or removed. */

export type DiffKind = 'same' | 'changed' | 'added' | 'removed';
export interface DiffRow {
  path: string;
  a: string | undefined;
  b: string | undefined;
  kind: DiffKind;
}

function flatten(x: unknown, path: string, out: Map<string, string>): Map<string, string> {
  if (typeof x === 'object' && x !== null && !Array.isArray(x) && Object.keys(x).length > 0) {
    for (const [k, v] of Object.entries(x)) flatten(v, path ? `${path}.${k}` : k, out);
  } else if (path) out.set(path, JSON.stringify(x));
  return out;
}

export function diffJson(a: unknown, b: unknown): DiffRow[] {
  const fa = flatten(a, '', new Map());
  const fb = flatten(b, '', new Map());
  const paths = [...new Set([...fa.keys(), ...fb.keys()])].sort();
  return paths.map((path) => {
    const x = fa.get(path);
    const y = fb.get(path);
    const kind: DiffKind = x === undefined ? 'added' : y === undefined ? 'removed' : x === y ? 'same' : 'changed';
    return { path, a: x, b: y, kind };
  });
}
