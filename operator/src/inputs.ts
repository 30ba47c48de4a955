/**
 * An AdapterMerge whose inputs are still being produced by other custom resources in its
 * namespace waits for them: an input is "produced by" a resource that writes to the same
 * repository and moves the input's tag (none means "latest", which every push moves).
 * A pinned version never waits: it names something that exists or not. Producers
 * that finished (Succeeded or Failed) no longer block; a missing input then fails the
 * worker with a clear reason.
 */
import type { Resource } from './job-spec.ts';

interface MergeInput {
  repository?: string;
  version?: number;
  tag?: string;
}

export interface Blocker {
  kind: string;
  name: string;
  phase: string;
  repository: string;
}

function produces(producer: Resource, input: MergeInput): boolean {
  const out = producer.spec.output;
  if (!input.repository || out?.repository !== input.repository) return false;
  if (input.version !== undefined) return false;
  const tag = input.tag ?? 'latest';
  return tag === 'latest' || (out.tags ?? []).includes(tag);
}

export function blockingProducers(merge: Resource, candidates: Resource[]): Blocker[] {
  const inputs = (merge.spec.inputs as MergeInput[] | undefined) ?? [];
  const blockers: Blocker[] = [];
  for (const p of candidates) {
    if (p.metadata.namespace !== merge.metadata.namespace) continue;
    if (p.kind === merge.kind && p.metadata.name === merge.metadata.name) continue;
    const phase = String(p.status?.phase ?? 'Pending');
    if (phase === 'Succeeded' || phase === 'Failed') continue;
    for (const input of inputs) {
      if (produces(p, input)) {
        blockers.push({ kind: p.kind, name: p.metadata.name, phase, repository: input.repository ?? '' });
        break;
      }
    }
  }
  return blockers;
}
