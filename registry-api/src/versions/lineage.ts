/**
 * The lineage graph around a version: ancestors (what it was trained, merged, compressed,
 * transferred, generated or extracted from), descendants, or both, to a depth. One
 * recursive query per direction; versions the caller may not read are returned as
 * hidden nodes (their existence, not their name), so a graph never leaks a private repository.
 */
import { Prisma, type PrismaClient } from '../generated/prisma/client.ts';

export interface LineageNode {
  id: string;
  /** namespace/name@number, or null when hidden from the caller. */
  version: string | null;
  hidden: boolean;
  depth: number;
}

export interface LineageEdgeView {
  child: string;
  /** A version id, or null for a parent outside the registry (see parentRef). */
  parent: string | null;
  parentRef: string | null;
  relation: string;
  weight: number | null;
}

interface Row {
  child_id: string;
  parent_id: string | null;
  parent_ref: string | null;
  relation: string;
  weight: number | null;
  depth: number;
}

const MAX_EDGES = 5000;

async function walk(db: PrismaClient, rootId: string, direction: 'ancestors' | 'descendants', depth: number): Promise<Row[]> {
  // ancestors follow child -> parent, descendants parent -> child: the same query with the columns swapped.
  const near = direction === 'ancestors' ? 'childId' : 'parentId';
  const nearCol = Prisma.raw(`e."${near}"`);
  const farOut = Prisma.raw(direction === 'ancestors' ? 'walk.parent_id' : 'walk.child_id');
  return db.$queryRaw<Row[]>`
    WITH RECURSIVE walk AS (
      SELECT e."childId" AS child_id, e."parentId" AS parent_id, e."parentRef" AS parent_ref, e.relation::text AS relation, e.weight, 1 AS depth
      FROM "LineageEdge" e WHERE ${nearCol} = ${rootId}::uuid
      UNION
      SELECT e."childId", e."parentId", e."parentRef", e.relation::text, e.weight, walk.depth + 1
      FROM "LineageEdge" e JOIN walk ON ${nearCol} = ${farOut}
      WHERE walk.depth < ${depth}
    ) SELECT * FROM walk LIMIT ${MAX_EDGES}`;
}

export async function lineageGraph(
  db: PrismaClient,
  rootId: string,
  options: {
    direction: 'ancestors' | 'descendants' | 'both';
    depth: number;
    canRead: (repo: { teamId: string; visibility: 'private' | 'internal' | 'public' }) => boolean;
  },
): Promise<{ nodes: LineageNode[]; edges: LineageEdgeView[]; truncated: boolean }> {
  const [up, down] = await Promise.all([
    options.direction !== 'descendants' ? walk(db, rootId, 'ancestors', options.depth) : [],
    options.direction !== 'ancestors' ? walk(db, rootId, 'descendants', options.depth) : [],
  ]);
  const rows = [...up, ...down];
  // Distance from the root: an ancestor row reaches its parent, a descendant row its child.
  const depthOf = new Map<string, number>([[rootId, 0]]);
  const reach = (id: string | null, d: number) => {
    if (id && (depthOf.get(id) ?? Number.POSITIVE_INFINITY) > d) depthOf.set(id, d);
  };
  for (const r of up) reach(r.parent_id, r.depth);
  for (const r of down) reach(r.child_id, r.depth);
  const versions = await db.version.findMany({ where: { id: { in: [...depthOf.keys()] } }, include: { repository: true } });
  const nodes = versions.map((v) => {
    const visible = options.canRead(v.repository);
    return {
      id: v.id,
      version: visible ? `${v.repository.namespace}/${v.repository.name}@${v.number}` : null,
      hidden: !visible,
      depth: depthOf.get(v.id) ?? 0,
    };
  });
  const seen = new Set<string>();
  const edges: LineageEdgeView[] = [];
  for (const r of rows) {
    const key = `${r.child_id}|${r.parent_id ?? r.parent_ref}|${r.relation}`;
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push({
      child: r.child_id,
      parent: r.parent_id,
      parentRef: r.parent_id ? null : r.parent_ref,
      relation: r.relation,
      weight: r.weight,
    });
  }
  nodes.sort((a, b) => a.depth - b.depth || (a.version ?? '').localeCompare(b.version ?? ''));
  return { nodes, edges, truncated: rows.length >= MAX_EDGES };
}
