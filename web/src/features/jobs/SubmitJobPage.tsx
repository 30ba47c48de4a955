/**
 * Submit a job from a form generated from its kind's schema (the same schema kubectl and the
 * CLI validate against). "Check" asks POST /v1/jobs:validate, "Submit" POST /v1/jobs; the
 * server's validation messages are listed on top (linked to their fields) and beside each field.
 */
import { type FormEvent, useState } from 'react';
import { api, type FieldError, type Problem } from '../../api/client.ts';
import { toProblem } from '../../api/problem.ts';
import { useApi } from '../../api/use-api.ts';
import { href, Link, navigate, useLocation } from '../../app/router.tsx';
import { Loading, ProblemView } from '../../shared/ProblemView.tsx';
import { fieldId, SchemaField } from './SchemaForm.tsx';
import { buildSpec, type RawValues, readSchema, type SchemaNode } from './schema.ts';

const KINDS = ['AdapterJob', 'AdapterMerge', 'CompressionJob'] as const;
type Kind = (typeof KINDS)[number];

export function SubmitJobPage() {
  const { query } = useLocation();
  const kind: Kind = KINDS.find((k) => k === query.get('kind')) ?? 'AdapterJob';
  const [schema] = useApi((signal) => api.GET('/v1/schemas/{kind}', { params: { path: { kind } }, signal }), [kind]);
  return (
    <section className="submit">
      <h1>Submit a job</h1>
      <div className="field">
        <label htmlFor="kind">Kind</label>
        <select id="kind" value={kind} onChange={(e) => navigate(href('/jobs/new', { kind: e.target.value }), { replace: true })}>
          {KINDS.map((k) => (
            <option key={k}>{k}</option>
          ))}
        </select>
      </div>
      {schema.status === 'loading' && <Loading what={`the ${kind} schema`} />}
      {schema.status === 'error' && <ProblemView problem={schema.problem} what={`the ${kind} schema`} />}
      {schema.status === 'ok' && <JobForm key={kind} kind={kind} resource={readSchema(schema.data)} />}
    </section>
  );
}

type Outcome = { kind: 'problem'; problem: Problem } | { kind: 'valid'; resource: unknown } | null;

function JobForm({ kind, resource }: { kind: Kind; resource: SchemaNode }) {
  const spec = resource.properties.find(([k]) => k === 'spec')?.[1];
  const [raw, setRaw] = useState<RawValues>({});
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome>(null);
  if (!spec) return <p className="error">The {kind} schema has no spec.</p>;
  const set = (path: string, value: string | string[]) => setRaw((r) => ({ ...r, [path]: value }));
  const errors: FieldError[] = outcome?.kind === 'problem' ? (outcome.problem.errors ?? []) : [];

  const send = async (action: 'validate' | 'submit') => {
    setBusy(true);
    setOutcome(null);
    const body = { kind, spec: buildSpec(spec, raw), ...(name.trim() ? { metadata: { name: name.trim() } } : {}) };
    try {
      if (action === 'validate') {
        const r = await api.POST('/v1/jobs:validate', { body });
        setOutcome(r.data ? { kind: 'valid', resource: r.data.resource } : { kind: 'problem', problem: toProblem(r.error, r.response) });
      } else {
        const r = await api.POST('/v1/jobs', { body });
        if (r.data) navigate('/jobs');
        else setOutcome({ kind: 'problem', problem: toProblem(r.error, r.response) });
      }
    } catch (err) {
      setOutcome({ kind: 'problem', problem: toProblem(err) });
    } finally {
      setBusy(false);
    }
  };
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void send('submit');
  };

  return (
    <form className="job-form" onSubmit={submit} noValidate>
      {outcome?.kind === 'problem' && <Problems problem={outcome.problem} />}
      {outcome?.kind === 'valid' && (
        <div className="state state-ok" role="status">
          <strong>Valid.</strong> With defaults applied:
          <pre className="code">{JSON.stringify(outcome.resource, null, 2)}</pre>
        </div>
      )}
      <div className="field">
        <label htmlFor="f-metadata.name">Job name</label>
        <input id="f-metadata.name" value={name} onChange={(e) => setName(e.target.value)} placeholder="generated when empty" />
      </div>
      <SchemaField node={spec} path="spec" name="spec" required raw={raw} set={set} errors={errors} />
      <div className="actions sticky">
        <button type="button" onClick={() => send('validate')} disabled={busy}>
          Check
        </button>
        <button type="submit" disabled={busy}>
          Submit
        </button>
        <Link to="/jobs">Cancel</Link>
      </div>
    </form>
  );
}

function Problems({ problem }: { problem: Problem }) {
  if (problem.status === 401 || problem.status === 403) return <ProblemView problem={problem} what="submitting jobs" />;
  return (
    <div className="state state-error" role="alert" data-testid="job-errors">
      <h2>{problem.detail}</h2>
      {problem.errors && problem.errors.length > 0 && (
        <ul>
          {problem.errors.map((e) => (
            <li key={`${e.path}:${e.message}`}>
              <a href={`#${fieldId(e.path)}`}>
                <code>{e.path}</code>
              </a>
              : {e.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
