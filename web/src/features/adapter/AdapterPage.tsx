/**
 * One repository: its versions with their tags, and the chosen version (?v=number or tag,
 * default latest): model card, pull snippets, files, config, lineage and diagnostics.
 */
import { api, type Repository, type Version } from '../../api/client.ts';
import { useApi } from '../../api/use-api.ts';
import { href, Link } from '../../app/router.tsx';
import { CodeBlock } from '../../shared/CodeBlock.tsx';
import { bytes, date } from '../../shared/format.ts';
import { Loading, ProblemView } from '../../shared/ProblemView.tsx';
import { Diagnostics } from '../diagnostics/Diagnostics.tsx';
import { MethodMetadata } from '../diagnostics/MethodMetadata.tsx';
import { FilesTable } from './FilesTable.tsx';
import { ModelCard } from './ModelCard.tsx';
import { ParentsList } from './ParentsList.tsx';
import { PullSnippets } from './PullSnippets.tsx';

export function AdapterPage({ namespace, name, version }: { namespace: string; name: string; version: string | null }) {
  const path = { namespace, name };
  const [repo] = useApi((signal) => api.GET('/v1/repos/{namespace}/{name}', { params: { path }, signal }), [namespace, name]);
  const [versions] = useApi((signal) => api.GET('/v1/repos/{namespace}/{name}/versions', { params: { path }, signal }), [namespace, name]);
  const what = `${namespace}/${name}`;
  if (repo.status === 'loading') return <Loading what={what} />;
  if (repo.status === 'error') return <ProblemView problem={repo.problem} what={what} />;
  const r = repo.data;
  return (
    <article className="adapter">
      <header className="adapter-head">
        <h1>
          <span className="muted">{r.namespace}/</span>
          {r.name}
        </h1>
        <p>
          for <strong>{r.baseModel}</strong> · <span className={`badge vis-${r.visibility}`}>{r.visibility}</span> · created{' '}
          {date(r.createdAt)}
        </p>
        {r.description && <p>{r.description}</p>}
        <p>
          {r.taskTags.map((t) => (
            <Link key={t} className="chip" to={href('/', { tag: t })}>
              {t}
            </Link>
          ))}
        </p>
      </header>
      {versions.status === 'loading' && <Loading what="versions" />}
      {versions.status === 'error' && <ProblemView problem={versions.problem} what={`the versions of ${what}`} />}
      {versions.status === 'ok' && <VersionsView repo={r} versions={versions.data.items} chosen={version} />}
    </article>
  );
}

function pick(repo: Repository, versions: Version[], chosen: string | null): Version | undefined {
  if (chosen) {
    const n = /^\d+$/.test(chosen) ? Number(chosen) : repo.tags[chosen];
    return versions.find((v) => v.number === n);
  }
  return versions.find((v) => v.number === repo.tags.latest) ?? versions[0];
}

function VersionsView({ repo, versions, chosen }: { repo: Repository; versions: Version[]; chosen: string | null }) {
  if (versions.length === 0)
    return (
      <div className="state state-empty" role="status">
        <h2>No versions yet</h2>
        <p>
          Push one with <code>lora push ./adapter {`${repo.namespace}/${repo.name}`}</code>.
        </p>
      </div>
    );
  const v = pick(repo, versions, chosen);
  const base = `/repos/${repo.namespace}/${repo.name}`;
  return (
    <div className="adapter-body">
      <nav className="versions" aria-label="Versions">
        <h2>Versions</h2>
        <ol>
          {versions.map((x) => (
            <li key={x.number}>
              <Link to={href(base, { v: x.number })} aria-current={x.number === v?.number ? 'page' : undefined}>
                v{x.number}
              </Link>{' '}
              {x.tags.map((t) => (
                <span key={t} className={`tag tag-${t === 'latest' ? 'latest' : 'other'}`}>
                  {t}
                </span>
              ))}
              {x.yanked && <span className="tag tag-yanked">yanked</span>}
              <div className="muted small">
                {x.method ?? 'unknown method'}
                {x.rank ? `, r=${x.rank}` : ''} · {date(x.createdAt)}
              </div>
            </li>
          ))}
        </ol>
      </nav>
      {v ? (
        <VersionDetail repo={repo} v={v} versions={versions} />
      ) : (
        <div className="state state-missing" role="alert">
          <h2>No version {chosen}</h2>
          <p>
            {repo.namespace}/{repo.name} has no version or tag “{chosen}”. Pick one from the list.
          </p>
        </div>
      )}
    </div>
  );
}

function VersionDetail({ repo, v, versions }: { repo: Repository; v: Version; versions: Version[] }) {
  const id = `${repo.namespace}/${repo.name}@${v.number}`;
  const previous = versions.find((x) => x.number < v.number);
  const size = v.files.reduce((n, f) => n + f.size, 0);
  return (
    <div className="version">
      <header>
        <h2>
          Version {v.number}{' '}
          {v.tags.map((t) => (
            <span key={t} className={`tag tag-${t === 'latest' ? 'latest' : 'other'}`}>
              {t}
            </span>
          ))}
        </h2>
        {v.yanked && (
          <p className="warn" role="note">
            Yanked {date(v.yanked.at ?? '')}: {v.yanked.reason}
          </p>
        )}
        <dl className="facts">
          <dt>Method</dt>
          <dd>{v.method ?? '—'}</dd>
          <dt>Rank</dt>
          <dd>{v.rank ?? '—'}</dd>
          <dt>Created</dt>
          <dd>{date(v.createdAt)}</dd>
          <dt>Size</dt>
          <dd>
            {bytes(size)} in {v.files.length} file{v.files.length === 1 ? '' : 's'}
          </dd>
        </dl>
        <p className="actions">
          <Link className="button" to={`/repos/${repo.namespace}/${repo.name}/versions/${v.number}/lineage`}>
            Lineage graph
          </Link>
          {previous && (
            <Link className="button" to={href('/compare', { a: `${repo.namespace}/${repo.name}@${previous.number}`, b: id })}>
              Compare with v{previous.number}
            </Link>
          )}
        </p>
      </header>
      <section aria-labelledby="card-h">
        <h3 id="card-h">Model card</h3>
        <ModelCard repo={repo} v={v} />
      </section>
      <section aria-labelledby="pull-h">
        <h3 id="pull-h">Use it</h3>
        <PullSnippets repo={repo} v={v} />
      </section>
      <section aria-labelledby="lineage-h">
        <h3 id="lineage-h">Made from</h3>
        <ParentsList v={v} />
      </section>
      <section aria-labelledby="diag-h">
        <h3 id="diag-h">Diagnostics</h3>
        <Diagnostics versions={[{ label: `v${v.number}`, v }]} />
      </section>
      <section aria-labelledby="meta-h">
        <h3 id="meta-h">Method metadata</h3>
        <MethodMetadata v={v} />
      </section>
      <section aria-labelledby="files-h">
        <h3 id="files-h">Files</h3>
        <FilesTable repo={repo} v={v} />
      </section>
      <section aria-labelledby="config-h">
        <h3 id="config-h">Config</h3>
        <CodeBlock label="adapter_config.json">{JSON.stringify(v.config, null, 2)}</CodeBlock>
      </section>
    </div>
  );
}
