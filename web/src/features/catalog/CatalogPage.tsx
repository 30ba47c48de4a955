/**
 * The catalog: full-text search with filters (base model, method, rank, task tag, team),
 * all kept in the URL so a search can be shared; results sortable by column; clear empty
 * and error states.
 */
import { type FormEvent, useMemo } from 'react';
import { api } from '../../api/client.ts';
import { useApi } from '../../api/use-api.ts';
import { href, Link, navigate } from '../../app/router.tsx';
import { date } from '../../shared/format.ts';
import { Loading, ProblemView } from '../../shared/ProblemView.tsx';
import { TableScroll } from '../../shared/TableScroll.tsx';
import { SORT_KEYS, type SortKey, type SortState, sortResults } from './sort.ts';

const FILTERS = [
  { key: 'baseModel', label: 'Base model', placeholder: 'meta-llama/Llama-3.2-1B' },
  { key: 'method', label: 'Method', placeholder: 'lora, dora, ties…' },
  { key: 'rank', label: 'Rank', placeholder: '16' },
  { key: 'tag', label: 'Task tag', placeholder: 'support' },
  { key: 'team', label: 'Team', placeholder: 'nlp' },
] as const;
const PARAMS = ['q', ...FILTERS.map((f) => f.key)] as const;
type Param = (typeof PARAMS)[number];

function paramsOf(query: URLSearchParams): Record<Param, string> {
  const out: Record<Param, string> = { q: '', baseModel: '', method: '', rank: '', tag: '', team: '' };
  for (const k of PARAMS) out[k] = query.get(k) ?? '';
  return out;
}

export function CatalogPage({ query }: { query: URLSearchParams }) {
  const params = paramsOf(query);
  const sort: SortState = {
    key: SORT_KEYS.find((k) => k === query.get('sort')) ?? 'relevance',
    dir: query.get('dir') === 'asc' ? 'asc' : 'desc',
  };
  const key = PARAMS.map((k) => params[k]).join('\u0000');
  const [result, reload] = useApi(
    (signal) => {
      const q: Record<string, string> = { limit: '100' };
      for (const k of PARAMS) if (params[k]) q[k] = params[k];
      return api.GET('/v1/repos', { params: { query: q }, signal });
    },
    [key],
  );
  const rows = useMemo(
    () => (result.status === 'ok' ? sortResults(result.data.items, { key: sort.key, dir: sort.dir }) : []),
    [result, sort.key, sort.dir],
  );

  const submit = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    const next: Record<string, string> = {};
    for (const k of PARAMS) next[k] = String(data.get(k) ?? '').trim();
    navigate(href('/', { ...next, sort: query.get('sort'), dir: query.get('dir') }));
  };
  const sortBy = (k: SortKey) => {
    const dir = sort.key === k && sort.dir === 'asc' ? 'desc' : 'asc';
    navigate(href('/', { ...params, sort: k, dir }), { replace: true });
  };
  const filtered = PARAMS.some((k) => params[k]);

  return (
    <section>
      <h1>Adapters</h1>
      <search>
        <form className="search" onSubmit={submit} key={key}>
          <div className="search-main">
            <label htmlFor="q" className="visually-hidden">
              Search adapters
            </label>
            <input id="q" name="q" type="search" defaultValue={params.q} placeholder='Search: words, "phrases", -excluded' />
            <button type="submit">Search</button>
          </div>
          <fieldset className="filters">
            <legend>Filters</legend>
            {FILTERS.map((f) => (
              <div key={f.key} className="field">
                <label htmlFor={`f-${f.key}`}>{f.label}</label>
                <input
                  id={`f-${f.key}`}
                  name={f.key}
                  defaultValue={params[f.key]}
                  placeholder={f.placeholder}
                  {...(f.key === 'rank' ? { inputMode: 'numeric' as const, pattern: '[1-9][0-9]{0,4}' } : {})}
                />
              </div>
            ))}
            {filtered && (
              <Link to="/" className="clear">
                Clear all
              </Link>
            )}
          </fieldset>
        </form>
      </search>

      {result.status === 'loading' && <Loading what="adapters" />}
      {result.status === 'error' && (
        <>
          <ProblemView problem={result.problem} what="the catalog" />
          <button type="button" onClick={reload}>
            Try again
          </button>
        </>
      )}
      {result.status === 'ok' && result.data.items.length === 0 && (
        <div className="state state-empty" role="status">
          <h2>No adapters found</h2>
          <p>
            {filtered
              ? 'Nothing matches this search and these filters. Remove a filter or search for fewer words.'
              : 'The catalog is empty, or nothing in it is visible to you. Push an adapter with `lora push`, or sign in to see your teams’ private adapters.'}
          </p>
          {filtered && <Link to="/">Clear the search</Link>}
        </div>
      )}
      {result.status === 'ok' && result.data.items.length > 0 && (
        <>
          <p role="status" className="count">
            {result.data.total} adapter{result.data.total === 1 ? '' : 's'}
            {result.data.total > result.data.items.length ? ` (first ${result.data.items.length} shown)` : ''}
          </p>
          <TableScroll label="Search results">
            <table className="results">
              <caption className="visually-hidden">Search results; column headers sort</caption>
              <thead>
                <tr>
                  <SortHeader k="name" label="Repository" sort={sort} onSort={sortBy} />
                  <SortHeader k="baseModel" label="Base model" sort={sort} onSort={sortBy} />
                  <SortHeader k="method" label="Method" sort={sort} onSort={sortBy} />
                  <SortHeader k="rank" label="Rank" sort={sort} onSort={sortBy} />
                  <SortHeader k="version" label="Latest" sort={sort} onSort={sortBy} />
                  <SortHeader k="created" label="Created" sort={sort} onSort={sortBy} />
                  <th scope="col">Tags</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr key={`${r.namespace}/${r.name}`}>
                    <td data-label="Repository">
                      <Link to={`/repos/${r.namespace}/${r.name}`}>
                        {r.namespace}/{r.name}
                      </Link>
                      {r.description && <div className="muted small">{r.description}</div>}
                    </td>
                    <td data-label="Base model">{r.baseModel}</td>
                    <td data-label="Method">{r.latestInfo?.method ?? '—'}</td>
                    <td data-label="Rank">{r.latestInfo?.rank ?? '—'}</td>
                    <td data-label="Latest">{r.latestInfo ? `v${r.latestInfo.number}` : 'no versions'}</td>
                    <td data-label="Created">{date(r.createdAt)}</td>
                    <td data-label="Tags">
                      {r.taskTags.map((t) => (
                        <Link key={t} className="chip" to={href('/', { tag: t })}>
                          {t}
                        </Link>
                      ))}
                      <span className="visually-hidden">{r.visibility}</span>
                      <span className={`badge vis-${r.visibility}`}>{r.visibility}</span>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </TableScroll>
        </>
      )}
    </section>
  );
}

function SortHeader({ k, label, sort, onSort }: { k: SortKey; label: string; sort: SortState; onSort: (k: SortKey) => void }) {
  const active = sort.key === k;
  return (
    <th scope="col" aria-sort={active ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none'}>
      <button type="button" className="sort" onClick={() => onSort(k)}>
        {label}
        <span aria-hidden="true">{active ? (sort.dir === 'asc' ? ' ▲' : ' ▼') : ' ↕'}</span>
      </button>
    </th>
  );
}
