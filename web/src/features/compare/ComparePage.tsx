/**
 * Two versions side by side (?a=ns/name@1&b=ns/name@2): facts, config diff, metrics,
 * parents, and their diagnostics overlaid (spectra per module, loss curves).
 */
import { type FormEvent, useState } from 'react';
import { api, type Version } from '../../api/client.ts';
import { type Loaded, useApi } from '../../api/use-api.ts';
import { href, Link, navigate } from '../../app/router.tsx';
import { bytes, date, parseVersionRef } from '../../shared/format.ts';
import { Loading, ProblemView } from '../../shared/ProblemView.tsx';
import { TableScroll } from '../../shared/TableScroll.tsx';
import { ParentsList } from '../adapter/ParentsList.tsx';
import { Diagnostics, VERSION_COLORS } from '../diagnostics/Diagnostics.tsx';
import { scalarMetrics } from '../diagnostics/read-metrics.ts';
import { diffJson } from './config-diff.ts';

function useVersion(ref: string | null): Loaded<Version> | null {
  const p = ref ? parseVersionRef(ref) : null;
  const [state] = useApi(
    (signal) =>
      p
        ? api.GET('/v1/repos/{namespace}/{name}/versions/{ref}', {
            params: { path: { namespace: p.namespace, name: p.name, ref: p.number } },
            signal,
          })
        : Promise.reject(new Error('no version')),
    [ref],
  );
  return p ? state : null;
}

export function ComparePage({ a, b }: { a: string | null; b: string | null }) {
  const va = useVersion(a);
  const vb = useVersion(b);
  return (
    <section className="compare">
      <h1>Compare versions</h1>
      <ChooseForm a={a} b={b} />
      {(!va || !vb) && (
        <p className="muted">
          Name two versions as <code>namespace/name@number</code> (or a tag, e.g. <code>@prod</code>), or open a version and choose “Compare
          with…”.
        </p>
      )}
      {va && vb && <Both a={va} b={vb} labels={[a ?? '', b ?? '']} />}
    </section>
  );
}

function ChooseForm({ a, b }: { a: string | null; b: string | null }) {
  const [error, setError] = useState<string | null>(null);
  const submit = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    const x = String(data.get('a') ?? '').trim();
    const y = String(data.get('b') ?? '').trim();
    const bad = [x, y].find((r) => !parseVersionRef(r));
    if (bad !== undefined) {
      setError(`“${bad}” is not namespace/name@version`);
      return;
    }
    setError(null);
    navigate(href('/compare', { a: x, b: y }));
  };
  return (
    <form className="compare-form" onSubmit={submit} key={`${a}|${b}`} noValidate>
      <div className="field">
        <label htmlFor="cmp-a">Version A</label>
        <input id="cmp-a" name="a" defaultValue={a ?? ''} placeholder="nlp/support-bot@1" aria-invalid={error ? true : undefined} />
      </div>
      <div className="field">
        <label htmlFor="cmp-b">Version B</label>
        <input id="cmp-b" name="b" defaultValue={b ?? ''} placeholder="nlp/support-bot@2" aria-invalid={error ? true : undefined} />
      </div>
      <button type="submit">Compare</button>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

function Both({ a, b, labels }: { a: Loaded<Version>; b: Loaded<Version>; labels: [string, string] }) {
  if (a.status === 'loading' || b.status === 'loading') return <Loading what="both versions" />;
  if (a.status === 'error') return <ProblemView problem={a.problem} what={labels[0]} />;
  if (b.status === 'error') return <ProblemView problem={b.problem} what={labels[1]} />;
  const vs = [a.data, b.data];
  const names = vs.map((v) => `${v.repository}@${v.number}`);
  const config = diffJson(a.data.config, b.data.config);
  const changed = config.filter((r) => r.kind !== 'same');
  const metrics = diffJson(Object.fromEntries(scalarMetrics(a.data.metrics)), Object.fromEntries(scalarMetrics(b.data.metrics)));
  return (
    <>
      <div className="side-by-side">
        {vs.map((v, i) => (
          <div key={names[i]} className="side" style={{ borderTopColor: VERSION_COLORS[i] }}>
            <h2>
              <span className="visually-hidden">{i === 0 ? 'A: ' : 'B: '}</span>
              <Link to={href(`/repos/${v.repository}`, { v: v.number })}>{names[i]}</Link>
            </h2>
            <dl className="facts">
              <dt>Method</dt>
              <dd>{v.method ?? '—'}</dd>
              <dt>Rank</dt>
              <dd>{v.rank ?? '—'}</dd>
              <dt>Created</dt>
              <dd>{date(v.createdAt)}</dd>
              <dt>Size</dt>
              <dd>{bytes(v.files.reduce((n, f) => n + f.size, 0))}</dd>
              <dt>Tags</dt>
              <dd>{v.tags.join(', ') || '—'}</dd>
            </dl>
            <h3>Made from</h3>
            <ParentsList v={v} />
          </div>
        ))}
      </div>
      <section aria-labelledby="cfg-h">
        <h2 id="cfg-h">Config: {changed.length === 0 ? 'identical' : `${changed.length} of ${config.length} fields differ`}</h2>
        <DiffTable rows={config} names={names} />
      </section>
      <section aria-labelledby="met-h">
        <h2 id="met-h">Metrics</h2>
        {metrics.length === 0 ? <p className="muted">Neither version has scalar metrics.</p> : <DiffTable rows={metrics} names={names} />}
      </section>
      <section aria-labelledby="dia-h">
        <h2 id="dia-h">Diagnostics, overlaid</h2>
        <Diagnostics versions={vs.map((v, i) => ({ label: names[i] ?? '', v }))} />
      </section>
    </>
  );
}

function DiffTable({ rows, names }: { rows: ReturnType<typeof diffJson>; names: string[] }) {
  const [all, setAll] = useState(false);
  const shown = all ? rows : rows.filter((r) => r.kind !== 'same');
  return (
    <>
      <label className="inline">
        <input type="checkbox" checked={all} onChange={(e) => setAll(e.target.checked)} /> show identical fields too
      </label>
      <TableScroll label="Differences">
        <table className="diff">
          <thead>
            <tr>
              <th scope="col">Field</th>
              <th scope="col">{names[0]}</th>
              <th scope="col">{names[1]}</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((r) => (
              <tr key={r.path} className={`diff-${r.kind}`}>
                <th scope="row">
                  <code>{r.path}</code> <span className="visually-hidden">{r.kind}</span>
                </th>
                <td>{r.a === undefined ? <em>absent</em> : <code>{r.a}</code>}</td>
                <td>{r.b === undefined ? <em>absent</em> : <code>{r.b}</code>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </TableScroll>
    </>
  );
}
