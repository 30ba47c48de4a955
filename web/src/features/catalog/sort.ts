/** Client-side ordering of one page of search results (the server orders by relevance or recency). */
import type { Repository } from '../../api/client.ts';

export type SortKey = 'relevance' | 'name' | 'baseModel' | 'method' | 'rank' | 'version' | 'created';
export interface SortState {
  key: SortKey;
  dir: 'asc' | 'desc';
}

export interface LatestInfo {
  number: number;
  method: string | null;
  rank: number | null;
}
export type SearchRow = Repository & { latestInfo: LatestInfo | null };

/** The search item's `latest` is typed loosely in the document; read it defensively. */
function latestOf(x: unknown): LatestInfo | null {
  if (typeof x !== 'object' || x === null) return null;
  const o = x as Record<string, unknown>;
  if (typeof o.number !== 'number') return null;
  return { number: o.number, method: typeof o.method === 'string' ? o.method : null, rank: typeof o.rank === 'number' ? o.rank : null };
}

export function sortResults(items: (Repository & { latest?: unknown })[], sort: SortState): SearchRow[] {
  const rows = items.map((r) => ({ ...r, latestInfo: latestOf(r.latest) }));
  if (sort.key === 'relevance') return rows;
  const value = (r: SearchRow): string | number => {
    switch (sort.key) {
      case 'name':
        return `${r.namespace}/${r.name}`;
      case 'baseModel':
        return r.baseModel;
      case 'method':
        return r.latestInfo?.method ?? '';
      case 'rank':
        return r.latestInfo?.rank ?? -1;
      case 'version':
        return r.latestInfo?.number ?? 0;
      default:
        return r.createdAt;
    }
  };
  const sign = sort.dir === 'asc' ? 1 : -1;
  return rows.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    return sign * (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y)));
  });
}
