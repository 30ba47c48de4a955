/**
 * The lineage graph of a version: ancestors and descendants to a depth, auto-laid out,
 * relations coloured and labelled with merge weights; every node is a link to that
 * version's own graph, so the family can be walked by clicking (or tabbing). A table of the
 * same edges follows for screen readers and small screens.
 */
import {
  Background,
  Controls,
  type Edge,
  Handle,
  MarkerType,
  MiniMap,
  type Node,
  type NodeProps,
  Position,
  ReactFlow,
} from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { useMemo } from 'react';
import { api, type LineageGraph } from '../../api/client.ts';
import { useApi } from '../../api/use-api.ts';
import { href, Link, navigate, useLocation } from '../../app/router.tsx';
import { Loading, ProblemView } from '../../shared/ProblemView.tsx';
import { TableScroll } from '../../shared/TableScroll.tsx';
import { type GraphEdge, type GraphNode, lineageModel } from './graph-model.ts';
import { RELATIONS, RelationBadge, RelationLegend } from './relations.tsx';

type Direction = 'ancestors' | 'descendants' | 'both';
type VersionNodeData = { node: GraphNode };

function VersionNode({ data }: NodeProps<Node<VersionNodeData>>) {
  const n = data.node;
  return (
    <div className={`lnode lnode-${n.kind}`} style={{ width: n.width, height: n.height }}>
      <Handle type="target" position={Position.Left} isConnectable={false} />
      {n.ref ? (
        <Link to={lineageHref(n.ref.namespace, n.ref.name, n.ref.number)} aria-current={n.kind === 'root' ? 'page' : undefined}>
          {n.label}
        </Link>
      ) : (
        <span>{n.label}</span>
      )}
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
}
const nodeTypes = { version: VersionNode };

const lineageHref = (namespace: string, name: string, ref: string, query: Record<string, string> = {}) =>
  href(`/repos/${namespace}/${name}/versions/${ref}/lineage`, query);

function toFlow(model: { nodes: GraphNode[]; edges: GraphEdge[] }): { nodes: Node<VersionNodeData>[]; edges: Edge[] } {
  return {
    nodes: model.nodes.map((n) => ({
      id: n.id,
      type: 'version',
      position: { x: n.x, y: n.y },
      width: n.width,
      height: n.height,
      data: { node: n },
      ariaLabel: n.label,
    })),
    edges: model.edges.map((e) => {
      const color = RELATIONS[e.relation].color;
      return {
        id: e.id,
        source: e.source,
        target: e.target,
        ...(e.label ? { label: e.label } : {}),
        style: { stroke: color, strokeWidth: e.relation === 'merged_from' ? 1.5 + 3 * Math.min(1, Math.abs(e.weight ?? 0)) : 1.8 },
        labelStyle: { fill: RELATIONS[e.relation].text, fontWeight: 600, fontSize: 11 },
        labelBgStyle: { fill: '#ffffff' },
        markerEnd: { type: MarkerType.ArrowClosed, color },
      };
    }),
  };
}

export function LineagePage({ namespace, name, versionRef }: { namespace: string; name: string; versionRef: string }) {
  const { query } = useLocation();
  const direction: Direction = ((d) => (d === 'ancestors' || d === 'descendants' ? d : 'both'))(query.get('direction'));
  const depth = /^([1-9]|[1-5][0-9]|6[0-4])$/.test(query.get('depth') ?? '') ? (query.get('depth') ?? '8') : '8';
  const [graph] = useApi(
    (signal) =>
      api.GET('/v1/repos/{namespace}/{name}/versions/{ref}/lineage', {
        params: { path: { namespace, name, ref: versionRef }, query: { direction, depth } },
        signal,
      }),
    [namespace, name, versionRef, direction, depth],
  );
  const id = `${namespace}/${name}@${versionRef}`;
  const setQuery = (next: Record<string, string>) =>
    navigate(lineageHref(namespace, name, versionRef, { direction, depth, ...next }), { replace: true });
  return (
    <section className="lineage">
      <h1>Lineage of {id}</h1>
      <p className="actions">
        <Link to={href(`/repos/${namespace}/${name}`, { v: versionRef })}>Open version {id}</Link>
      </p>
      <fieldset className="controls">
        <legend className="visually-hidden">Graph options</legend>
        <label>
          Show{' '}
          <select value={direction} onChange={(e) => setQuery({ direction: e.target.value })}>
            <option value="both">ancestors and descendants</option>
            <option value="ancestors">ancestors only</option>
            <option value="descendants">descendants only</option>
          </select>
        </label>
        <label>
          Depth{' '}
          <select value={depth} onChange={(e) => setQuery({ depth: e.target.value })}>
            {['1', '2', '4', '8', '16', '32', '64'].map((d) => (
              <option key={d}>{d}</option>
            ))}
          </select>
        </label>
      </fieldset>
      {graph.status === 'loading' && <Loading what="the lineage" />}
      {graph.status === 'error' && <ProblemView problem={graph.problem} what={`the lineage of ${id}`} />}
      {graph.status === 'ok' && <LineageView graph={graph.data} />}
    </section>
  );
}

function LineageView({ graph }: { graph: LineageGraph }) {
  const model = useMemo(() => lineageModel(graph), [graph]);
  const flow = useMemo(() => toFlow(model), [model]);
  const present = [...new Set(model.edges.map((e) => e.relation))];
  const byId = new Map(model.nodes.map((n) => [n.id, n]));
  // Small graphs fit whole; large ones open centred on the root at full size (pan, zoom or use the minimap for the rest).
  const large = model.nodes.length > 24;
  if (model.edges.length === 0)
    return (
      <div className="state state-empty" role="status">
        <h2>No recorded lineage</h2>
        <p>This version has no parents or children in the registry at this depth.</p>
      </div>
    );
  return (
    <>
      <p role="status" className="count">
        {model.nodes.length} nodes, {model.edges.length} edges{graph.truncated ? ' (truncated: narrow the depth)' : ''}
      </p>
      <RelationLegend present={present} />
      <div className="graph" data-testid="lineage-graph">
        <ReactFlow
          nodes={flow.nodes}
          edges={flow.edges}
          nodeTypes={nodeTypes}
          fitView
          fitViewOptions={large ? { nodes: [{ id: graph.root }], minZoom: 1, maxZoom: 1 } : { padding: 0.1, maxZoom: 1.2 }}
          minZoom={0.05}
          nodesDraggable={false}
          nodesConnectable={false}
          elementsSelectable={false}
          proOptions={{ hideAttribution: true }}
          onNodeClick={(_e, n) => {
            const ref = byId.get(n.id)?.ref;
            if (ref) navigate(lineageHref(ref.namespace, ref.name, ref.number));
          }}
        >
          <Background />
          <Controls showInteractive={false} />
          {large && (
            <MiniMap
              pannable
              zoomable
              ariaLabel="Overview of the lineage graph"
              nodeColor={(n) => (n.id === graph.root ? '#0a58ca' : '#8c959f')}
              nodeStrokeWidth={3}
            />
          )}
        </ReactFlow>
      </div>
      <details className="edges-table">
        <summary>All {model.edges.length} edges as a table</summary>
        <TableScroll label="Lineage edges">
          <table>
            <thead>
              <tr>
                <th scope="col">Child</th>
                <th scope="col">Relation</th>
                <th scope="col">Parent</th>
                <th scope="col">Weight</th>
              </tr>
            </thead>
            <tbody>
              {model.edges.map((e) => (
                <tr key={e.id}>
                  <td>{byId.get(e.target)?.label}</td>
                  <td>
                    <RelationBadge relation={e.relation} />
                  </td>
                  <td>{byId.get(e.source)?.label}</td>
                  <td>{e.weight ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableScroll>
      </details>
    </>
  );
}
