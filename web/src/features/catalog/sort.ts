/** Client-side ordering of one page of search results (the server orders by relevance or recency). */
import type { Repository } from '../../api/client.ts';

export const SORT_KEYS = ['relevance', 'name', 'baseModel', 'method', 'rank', 'version', 'created'] as const;
export type SortKey = (typeof SORT_KEYS)[number];
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
  if (typeof x !== 'object' || x === null || !('number' in x) || typeof x.number !== 'number') return null;
  const method = 'method' in x && typeof x.method === 'string' ? x.method : null;
  const rank = 'rank' in x && typeof x.rank === 'number' ? x.rank : null;
  return { number: x.number, method, rank };
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
