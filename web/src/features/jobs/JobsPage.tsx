/**
 * Your jobs (all of them for site admins), newest first; running and queued ones update
 * live over Server-Sent Events (status, progress, loss, ETA), with their event log, and can
 * be cancelled.
 */
import { useEffect, useState } from 'react';
import { api, type JobRecord, type Problem } from '../../api/client.ts';
import { toProblem } from '../../api/problem.ts';
import { useApi } from '../../api/use-api.ts';
import { href, Link, navigate, useLocation } from '../../app/router.tsx';
import { date, num } from '../../shared/format.ts';
import { Loading, ProblemView } from '../../shared/ProblemView.tsx';
import { followJob } from './job-events.ts';
import { duration, readProgress } from './progress.ts';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
type Status = (typeof STATUSES)[number];
const TERMINAL = new Set<string>(['succeeded', 'failed', 'cancelled']);
const asStatus = (s: string | null): Status | undefined => STATUSES.find((x) => x === s);

export function JobsPage() {
  const { query } = useLocation();
  const status = asStatus(query.get('status'));
  const [jobs, reload] = useApi((signal) => api.GET('/v1/jobs', { params: { query: status ? { status } : {} }, signal }), [status]);
  return (
    <section className="jobs">
      <h1>Jobs</h1>
      <div className="controls">
        <label>
          Status{' '}
          <select value={status ?? ''} onChange={(e) => navigate(href('/jobs', { status: e.target.value }), { replace: true })}>
            <option value="">all</option>
            {STATUSES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <button type="button" onClick={reload}>
          Refresh
        </button>
        <Link className="button" to="/jobs/new">
          Submit a job
        </Link>
      </div>
      {jobs.status === 'loading' && <Loading what="jobs" />}
      {jobs.status === 'error' && <ProblemView problem={jobs.problem} what="your jobs" />}
      {jobs.status === 'ok' && jobs.data.items.length === 0 && (
        <div className="state state-empty" role="status">
          <h2>No jobs{status ? ` ${status}` : ''}</h2>
          <p>
            Submit one here, with <code>lora jobs submit job.yaml</code>, or with <code>kubectl apply</code> on a cluster.
          </p>
        </div>
      )}
      {jobs.status === 'ok' && (
        <ol className="job-list">
          {jobs.data.items.map((j) => (
            <li key={j.id}>
              <JobCard initial={j} />
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

interface LogLine {
  at: string;
  text: string;
}

function describe(j: JobRecord): string {
  const p = readProgress(j.progress);
  const parts: string[] = [j.status];
  if (p.step !== null) parts.push(`step ${p.step}${p.totalSteps ? `/${p.totalSteps}` : ''}`);
  if (p.loss !== null) parts.push(`loss ${num(p.loss)}`);
  if (p.evalLoss !== null) parts.push(`eval loss ${num(p.evalLoss)}`);
  if (j.error) parts.push(`error: ${j.error}`);
  return parts.join(' · ');
}

export function JobCard({ initial }: { initial: JobRecord }) {
  const [job, setJob] = useState(initial);
  const [log, setLog] = useState<LogLine[]>([]);
  const [live, setLive] = useState(false);
  const [problem, setProblem] = useState<Problem | null>(null);
  const done = TERMINAL.has(job.status);

  useEffect(() => {
    if (TERMINAL.has(initial.status)) return;
    const abort = new AbortController();
    setLive(true);
    followJob(
      initial.id,
      (j) => {
        setJob(j);
        setLog((l) => [...l.slice(-199), { at: new Date().toISOString(), text: describe(j) }]);
      },
      abort.signal,
    )
      .catch((err: unknown) => {
        if (!abort.signal.aborted) setProblem(toProblem(err));
      })
      .finally(() => {
        if (!abort.signal.aborted) setLive(false);
      });
    return () => abort.abort();
  }, [initial.id, initial.status]);

  const cancel = async () => {
    setProblem(null);
    const r = await api
      .POST('/v1/jobs/{id}:cancel', { params: { path: { id: job.id } } })
      .catch((err: unknown) => ({ error: err, data: undefined, response: undefined }));
    if (r.data) setJob(r.data);
    else setProblem(toProblem(r.error, r.response));
  };

  const p = readProgress(job.progress);
  const labelId = `job-${job.id}-name`;
  return (
    <article className={`job job-${job.status}`} aria-labelledby={labelId} data-testid={`job-${job.id}`}>
      <header>
        <h2 id={labelId}>
          {job.name} <span className="muted small">{job.kind}</span>
        </h2>
        <span className={`status status-${job.status}`} data-testid="job-status">
          {job.status}
        </span>
        {live && (
          <span className="live" title="updates arrive live">
            ● live
          </span>
        )}
      </header>
      <div className="job-progress">
        <progress
          max={100}
          value={p.percent ?? undefined}
          aria-label={`Progress of ${job.name}`}
          aria-valuetext={p.percent === null ? 'unknown' : `${Math.round(p.percent)}%`}
        />
        <span data-testid="job-percent">{p.percent === null ? (done ? '' : 'waiting for progress') : `${Math.round(p.percent)}%`}</span>
      </div>
      <dl className="facts small">
        {p.step !== null && (
          <>
            <dt>Step</dt>
            <dd>
              {p.step}
              {p.totalSteps ? ` / ${p.totalSteps}` : ''}
            </dd>
          </>
        )}
        {p.loss !== null && (
          <>
            <dt>Loss</dt>
            <dd data-testid="job-loss">{num(p.loss)}</dd>
          </>
        )}
        {p.evalLoss !== null && (
          <>
            <dt>Eval loss</dt>
            <dd>{num(p.evalLoss)}</dd>
          </>
        )}
        {p.tokensPerSecond !== null && (
          <>
            <dt>Tokens/s</dt>
            <dd>{num(p.tokensPerSecond, 3)}</dd>
          </>
        )}
        {p.etaSeconds !== null && !done && (
          <>
            <dt>ETA</dt>
            <dd>{duration(p.etaSeconds)}</dd>
          </>
        )}
        <dt>Submitted</dt>
        <dd>{date(job.createdAt)}</dd>
        {job.finishedAt && (
          <>
            <dt>Finished</dt>
            <dd>{date(job.finishedAt)}</dd>
          </>
        )}
      </dl>
      {job.error && (
        <p className="error" role="alert">
          {job.error}
        </p>
      )}
      {problem && <ProblemView problem={problem} what={`job ${job.name}`} />}
      <div className="actions">
        {!done && (
          <button type="button" className="danger" onClick={cancel}>
            Cancel {job.name}
          </button>
        )}
      </div>
      <details>
        <summary>Event log ({log.length})</summary>
        <ol className="log" aria-live="polite">
          {log.map((l, i) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: an append-only log.
            <li key={i}>
              <time dateTime={l.at}>{l.at.slice(11, 19)}</time> {l.text}
            </li>
          ))}
        </ol>
      </details>
      <WorkerLog id={job.id} tick={`${job.status}:${JSON.stringify(job.progress)}`} />
      <details>
        <summary>Spec</summary>
        <pre className="code">{JSON.stringify(job.spec, null, 2)}</pre>
      </details>
    </article>
  );
}

/** The worker's own log lines (every attempt), loaded when opened and refreshed as the job moves. */
function WorkerLog({ id, tick }: { id: string; tick: string }) {
  const [open, setOpen] = useState(false);
  const [lines, setLines] = useState<{ seq: number; attempt?: number; stream: string; text: string }[]>([]);
  const [problem, setProblem] = useState<Problem | null>(null);
  // biome-ignore lint/correctness/useExhaustiveDependencies: `tick` changes when the job does.
  useEffect(() => {
    if (!open) return;
    const abort = new AbortController();
    api.GET('/v1/jobs/{id}/logs', { params: { path: { id }, query: { limit: '10000' } }, signal: abort.signal }).then(
      (r) => {
        if (r.data) setLines(r.data.lines);
        else setProblem(toProblem(r.error, r.response));
      },
      (err: unknown) => {
        if (!abort.signal.aborted) setProblem(toProblem(err));
      },
    );
    return () => abort.abort();
  }, [open, id, tick]);
  return (
    <details onToggle={(e) => setOpen((e.target as HTMLDetailsElement).open)}>
      <summary>Worker log{open ? ` (${lines.length} lines)` : ''}</summary>
      {problem && <ProblemView problem={problem} what="the worker log" />}
      {open && lines.length === 0 && !problem && <p className="muted small">No lines yet: the worker has not written any.</p>}
      <pre className="code log-lines" data-testid="worker-log">
        {lines.map((l) => `${l.attempt ? `[${l.attempt}] ` : ''}${l.stream === 'stderr' ? '! ' : ''}${l.text}`).join('\n')}
      </pre>
    </details>
  );
}
