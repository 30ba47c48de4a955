/**
 * The API's lineage graph as boxes and arrows: one node per version (hidden ones
 * anonymised), one per outside parent (hf:…), arrows from parent to child, laid out by
 * dagre (layered, left to right) so families of 50+ versions stay readable.
 */
import dagre from '@dagrejs/dagre';
import type { LineageGraph } from '../../api/client.ts';
import { num, parseVersionRef } from '../../shared/format.ts';
import { RELATIONS, type Relation } from './relations.tsx';

export interface GraphNode {
  id: string;
  label: string;
  kind: 'root' | 'version' | 'hidden' | 'external';
  /** namespace, name, number for versions the caller can read. */
  ref: { namespace: string; name: string; number: string } | null;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  relation: Relation;
  weight: number | null;
  label: string;
}

export const NODE_HEIGHT = 44;
const CHAR_WIDTH = 7.4;

export function lineageModel(g: LineageGraph): { nodes: GraphNode[]; edges: GraphEdge[] } {
  const nodes = new Map<string, Omit<GraphNode, 'x' | 'y'>>();
  const add = (id: string, label: string, kind: GraphNode['kind'], ref: GraphNode['ref']) =>
    nodes.set(id, { id, label, kind, ref, width: Math.max(120, Math.round(label.length * CHAR_WIDTH) + 32), height: NODE_HEIGHT });
  for (const n of g.nodes) {
    const ref = n.version ? parseVersionRef(n.version) : null;
    add(n.id, n.version ?? 'hidden version', n.id === g.root ? 'root' : n.hidden ? 'hidden' : 'version', ref);
  }
  const edges: GraphEdge[] = [];
  g.edges.forEach((e, i) => {
    let source = e.parent;
    if (!source && e.parentRef) {
      source = `ref:${e.parentRef}`;
      if (!nodes.has(source)) add(source, e.parentRef, 'external', null);
    }
    if (!source || !nodes.has(e.child) || !nodes.has(source)) return;
    const label = RELATIONS[e.relation].label + (typeof e.weight === 'number' ? ` · w ${num(e.weight, 3)}` : '');
    edges.push({ id: `e${i}`, source, target: e.child, relation: e.relation, weight: e.weight, label });
  });

  const layout = new dagre.graphlib.Graph({ multigraph: true });
  layout.setGraph({ rankdir: 'LR', nodesep: 28, ranksep: 150, marginx: 16, marginy: 16 });
  layout.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes.values()) layout.setNode(n.id, { width: n.width, height: n.height });
  for (const e of edges) layout.setEdge(e.source, e.target, {}, e.id);
  dagre.layout(layout);
  const placed: GraphNode[] = [...nodes.values()].map((n) => {
    const p = layout.node(n.id);
    return { ...n, x: (p?.x ?? 0) - n.width / 2, y: (p?.y ?? 0) - n.height / 2 };
  });
  return { nodes: placed, edges: thinFanLabels(edges, placed) };
}

/**
 * A version with many children of one relation (a sweep) would stack dozens of identical
 * labels where its edges leave it: keep the label on the middle edge of such a fan only;
 * the colour and the legend still name the relation of every edge.
 */
function thinFanLabels(edges: GraphEdge[], nodes: GraphNode[]): GraphEdge[] {
  const y = new Map(nodes.map((n) => [n.id, n.y]));
  const fans = new Map<string, GraphEdge[]>();
  for (const e of edges) {
    const key = `${e.source}|${e.relation}|${e.weight ?? ''}`;
    fans.set(key, [...(fans.get(key) ?? []), e]);
  }
  const keep = new Set<string>();
  for (const fan of fans.values()) {
    if (fan.length <= 4) for (const e of fan) keep.add(e.id);
    else {
      const sorted = [...fan].sort((a, b) => (y.get(a.target) ?? 0) - (y.get(b.target) ?? 0));
      const mid = sorted[Math.floor(sorted.length / 2)];
      if (mid) keep.add(mid.id);
    }
  }
  return edges.map((e) => (keep.has(e.id) ? e : { ...e, label: '' }));
}
