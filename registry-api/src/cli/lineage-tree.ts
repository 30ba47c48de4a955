/** Renders a lineage graph as a terminal tree: the version, then its parents (or children), indented. */
export interface Graph {
  root: string;
  nodes: { id: string; version: string | null; hidden: boolean }[];
  edges: { child: string; parent: string | null; parentRef: string | null; relation: string; weight: number | null }[];
}

export function renderTree(g: Graph, direction: 'ancestors' | 'descendants'): string {
  const name = new Map(g.nodes.map((n) => [n.id, n.hidden ? '(hidden: no access)' : (n.version ?? n.id)]));
  const lines = [name.get(g.root) ?? g.root];
  const seen = new Set([g.root]);
  const next = (id: string) =>
    direction === 'ancestors'
      ? g.edges
          .filter((e) => e.child === id)
          .map((e) => ({ id: e.parent, label: e.parent ? (name.get(e.parent) ?? e.parent) : (e.parentRef ?? '?'), e }))
      : g.edges.filter((e) => e.parent === id).map((e) => ({ id: e.child as string | null, label: name.get(e.child) ?? e.child, e }));
  const walk = (id: string, indent: string) => {
    const kids = next(id).sort((a, b) => a.label.localeCompare(b.label));
    kids.forEach((k, i) => {
      const last = i === kids.length - 1;
      const weight = k.e.weight === null ? '' : ` (${k.e.weight})`;
      const again = k.id && seen.has(k.id) ? ' (see above)' : '';
      lines.push(`${indent}${last ? '└─' : '├─'} ${k.e.relation}${weight} ${k.label}${again}`);
      if (k.id && !again) {
        seen.add(k.id);
        walk(k.id, `${indent}${last ? '   ' : '│  '}`);
      }
    });
  };
  walk(g.root, '');
  return lines.join('\n');
}
