/**
 * Progress in status, pushed by the worker through the registry (never scraped from logs
 * or exec): a resource annotated with its registry job record (`lora.lowrank.dev/registry-job`)
 * hands the id to the worker as LOWRANK_JOB_ID; the worker POSTs /v1/jobs/{id}/progress;
 * the operator reads GET /v1/jobs/{id} while the job runs and copies the numbers into
 * status.progress. A registry that is down only delays progress: the run goes on.
 * Without the annotation, the operator records the job itself before making its Job
 * (POST /v1/jobs?executor=external, with its own token) and annotates the resource.
 */
import { GROUP } from './kinds.ts';

export const REGISTRY_JOB_ANNOTATION = `${GROUP}/registry-job`;
const ID = /^[0-9a-f-]{36}$/;

export interface Progress {
  step?: number;
  totalSteps?: number;
  percent?: number;
  loss?: number;
  evalLoss?: number;
  tokensPerSecond?: number;
  etaSeconds?: number;
}

export function registryJobId(annotations: Record<string, string> | undefined): string | undefined {
  const id = annotations?.[REGISTRY_JOB_ANNOTATION];
  return id && ID.test(id) ? id : undefined;
}

const num = (v: unknown, min = 0): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= min ? v : undefined);
const int = (v: unknown): number | undefined => {
  const n = num(v);
  return n === undefined ? undefined : Math.round(n);
};

/** The registry's free-form progress object, reduced to the CRD's status.progress fields. */
export function toStatusProgress(raw: Record<string, unknown> | undefined): Progress | undefined {
  if (!raw) return undefined;
  const step = int(raw.step);
  const totalSteps = int(raw.totalSteps ?? raw.total);
  let percent = int(raw.percent);
  if (percent === undefined && step !== undefined && totalSteps) percent = Math.floor((100 * step) / totalSteps);
  const p: Progress = {
    step,
    totalSteps,
    percent: percent === undefined ? undefined : Math.min(100, percent),
    loss: num(raw.loss, Number.NEGATIVE_INFINITY),
    evalLoss: num(raw.evalLoss, Number.NEGATIVE_INFINITY),
    tokensPerSecond: num(raw.tokensPerSecond),
    etaSeconds: int(raw.etaSeconds),
  };
  const out = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as Progress;
  return Object.keys(out).length > 0 ? out : undefined;
}

export async function fetchProgress(registryUrl: string, token: string, id: string): Promise<Progress | undefined> {
  const res = await fetch(`${registryUrl.replace(/\/+$/, '')}/v1/jobs/${id}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(5000),
  });
  if (!res.ok) throw new Error(`GET /v1/jobs/${id}: HTTP ${res.status}`);
  const job = (await res.json()) as { progress?: Record<string, unknown> };
  return toStatusProgress(job.progress);
}

/**
 * Records the resource as a registry job run elsewhere (by this operator) and returns its
 * id; undefined when the registry refuses it (e.g. the token's team does not own the
 * output repository) or is unreachable: the run goes on without progress in status.
 */
export async function createRegistryJob(
  registryUrl: string,
  token: string,
  resource: { apiVersion?: string; kind: string; metadata: { name: string }; spec: unknown },
): Promise<{ id?: string; error?: string }> {
  try {
    const res = await fetch(`${registryUrl.replace(/\/+$/, '')}/v1/jobs?executor=external`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        apiVersion: resource.apiVersion,
        kind: resource.kind,
        metadata: { name: resource.metadata.name },
        spec: resource.spec,
      }),
      signal: AbortSignal.timeout(5000),
    });
    const body = (await res.json().catch(() => ({}))) as { id?: string; detail?: string };
    if (!res.ok || !body.id || !ID.test(body.id)) return { error: `POST /v1/jobs: HTTP ${res.status} ${body.detail ?? ''}`.trim() };
    return { id: body.id };
  } catch (err) {
    return { error: (err as Error).message };
  }
}
