/**
 * Progress in status, pushed by the worker through the registry (never scraped from logs
 * or exec): a resource annotated with its registry job record (`lora.lowrank.dev/registry-job`)
 * hands the id to the worker as LOWRANK_JOB_ID; the worker POSTs /v1/jobs/{id}/progress;
 * the operator reads GET /v1/jobs/{id} while the job runs and copies the numbers into
 * status.progress. A registry that is down only delays progress: the run goes on.
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
