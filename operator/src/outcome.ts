/**
 * What the Job and its pods say about the run: phase, reason and message, and on success
 * the output version from the worker's result (the container's termination message).
 * Pure: the reconciler fetches, this reads.
 */
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import { CONTAINER } from './job-spec.ts';

export type Phase = 'Pending' | 'Queued' | 'Running' | 'Succeeded' | 'Failed' | 'Suspended';

export interface OutputVersion {
  repository: string;
  version: number;
  uri?: string;
  digest?: string;
}

export interface Observation {
  phase: Phase;
  reason: string;
  message: string;
  attempts: number;
  startTime?: string;
  completionTime?: string;
  outputVersion?: OutputVersion;
}

/** The worker's result file, as the contract defines it; anything else is reported, not trusted. */
export type WorkerResult =
  | { status: 'succeeded'; output: { repository: string; version: string | number; ref?: string; digest?: string } }
  | { status: 'failed'; reason: string; message?: string };

export function parseResult(message: string | undefined): WorkerResult | undefined {
  if (!message) return undefined;
  try {
    const v = JSON.parse(message) as WorkerResult;
    if (v && v.status === 'succeeded' && typeof v.output?.repository === 'string') return v;
    if (v && v.status === 'failed' && typeof v.reason === 'string') return v;
  } catch {}
  return undefined;
}

/** "v3", "3" or 3 -> 3; anything else undefined. */
export function versionNumber(v: string | number): number | undefined {
  const n = typeof v === 'number' ? v : Number(String(v).replace(/^v/, ''));
  return Number.isInteger(n) && n >= 1 ? n : undefined;
}

const iso = (d: Date | string | undefined) => (d === undefined ? undefined : new Date(d).toISOString());

function workerState(pod: V1Pod) {
  return pod.status?.containerStatuses?.find((c) => c.name === CONTAINER)?.state;
}

/** Newest first, so the last attempt's story is told. */
function byCreation(pods: V1Pod[]): V1Pod[] {
  return [...pods].sort(
    (a, b) => new Date(b.metadata?.creationTimestamp ?? 0).getTime() - new Date(a.metadata?.creationTimestamp ?? 0).getTime(),
  );
}

export function observeJob(job: V1Job, pods: V1Pod[], registryUrl: string): Observation {
  const st = job.status ?? {};
  // The Job's counters lag its pods while the controller tracks them; count both.
  const attempts = Math.max((st.succeeded ?? 0) + (st.failed ?? 0) + (st.active ?? 0), pods.length);
  const base = { attempts, startTime: iso(st.startTime) };
  const cond = (type: string) => st.conditions?.find((c) => c.type === type && c.status === 'True');
  const sorted = byCreation(pods);

  // Terminal only on the final conditions: SuccessCriteriaMet/FailureTarget come first,
  // while pods may still be terminating and the counters are not final yet.
  if (cond('Complete')) {
    const pod = sorted.find((p) => p.status?.phase === 'Succeeded');
    const result = parseResult(pod ? workerState(pod)?.terminated?.message : undefined);
    if (result?.status !== 'succeeded') {
      return {
        ...base,
        phase: 'Failed',
        reason: 'NoResult',
        message: 'the worker exited 0 but wrote no valid result file (LOWRANK_RESULT_FILE)',
        completionTime: iso(st.completionTime),
      };
    }
    const version = versionNumber(result.output.version);
    if (version === undefined) {
      return { ...base, phase: 'Failed', reason: 'BadResult', message: `the worker reported version "${result.output.version}"` };
    }
    const [ns, name] = result.output.repository.split('/');
    return {
      ...base,
      phase: 'Succeeded',
      reason: 'Completed',
      message: `pushed ${result.output.repository} version ${version}`,
      completionTime: iso(st.completionTime) ?? new Date().toISOString(),
      outputVersion: {
        repository: result.output.repository,
        version,
        uri: `${registryUrl.replace(/\/+$/, '')}/v1/repos/${ns}/${name}/versions/${version}`,
        ...(result.output.digest ? { digest: result.output.digest } : {}),
      },
    };
  }

  const failed = cond('Failed');
  if (failed) {
    const pod = sorted.find((p) => p.status?.phase === 'Failed');
    const term = pod ? workerState(pod)?.terminated : undefined;
    const result = parseResult(term?.message);
    const exit = term ? ` (exit code ${term.exitCode})` : '';
    if (result?.status === 'failed') {
      return {
        ...base,
        phase: 'Failed',
        reason: result.reason,
        message: `${result.message ?? result.reason}${exit}; Job: ${failed.reason ?? 'Failed'}`,
        completionTime: iso(failed.lastTransitionTime),
      };
    }
    const logTail = term?.message ? `: ${term.message.trim().slice(-500)}` : '';
    return {
      ...base,
      phase: 'Failed',
      reason: failed.reason || 'JobFailed',
      message: `${failed.message ?? 'the Job failed'}${exit}${logTail}`,
      completionTime: iso(failed.lastTransitionTime),
    };
  }

  if (job.spec?.suspend) return { ...base, phase: 'Suspended', reason: 'Suspended', message: 'spec.suspend is true: no pod runs' };

  const running = sorted.find((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp);
  if (running) return { ...base, phase: 'Running', reason: 'PodRunning', message: `pod ${running.metadata?.name} is running` };

  // Between a pod's end and the Job's verdict: still running (finishing), or a failed
  // attempt the Job controller is about to retry. Never "Pending/JobCreated" again.
  const finishing = cond('FailureTarget') ?? cond('SuccessCriteriaMet');
  if (finishing) {
    return {
      ...base,
      phase: 'Running',
      reason: 'Finishing',
      message: `the Job is finishing (${finishing.type}: ${finishing.reason ?? ''})`,
    };
  }
  const newest = sorted.find((p) => !p.metadata?.deletionTimestamp);
  if (newest?.status?.phase === 'Succeeded') {
    return { ...base, phase: 'Running', reason: 'Completing', message: `pod ${newest.metadata?.name} succeeded; the Job is completing` };
  }
  if (newest?.status?.phase === 'Failed') {
    const term = workerState(newest)?.terminated;
    const result = parseResult(term?.message);
    const why = result?.status === 'failed' ? result.reason : (term?.reason ?? 'Error');
    return {
      ...base,
      phase: 'Pending',
      reason: 'Retrying',
      message: `attempt ${attempts} failed (exit code ${term?.exitCode ?? '?'}, ${why}); retrying within backoffLimit ${job.spec?.backoffLimit ?? 6}`,
    };
  }

  const pending = sorted.find((p) => p.status?.phase === 'Pending');
  if (pending) {
    const waiting = workerState(pending)?.waiting;
    const unschedulable = pending.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
    const why = waiting
      ? `${waiting.reason}: ${waiting.message ?? ''}`
      : unschedulable
        ? `${unschedulable.reason}: ${unschedulable.message ?? ''}`
        : 'waiting to start';
    return {
      ...base,
      phase: 'Pending',
      reason: waiting?.reason ?? unschedulable?.reason ?? 'PodPending',
      message: `pod ${pending.metadata?.name}: ${why}`,
    };
  }
  return { ...base, phase: 'Pending', reason: 'JobCreated', message: `Job ${job.metadata?.name} created, waiting for its pod` };
}
