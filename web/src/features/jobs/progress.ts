/** The progress a worker reports on a job (the CRD's status.progress fields), read defensively. */

export interface Progress {
  percent: number | null;
  step: number | null;
  totalSteps: number | null;
  loss: number | null;
  evalLoss: number | null;
  tokensPerSecond: number | null;
  etaSeconds: number | null;
}

const finite = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x : null);

export function readProgress(p: unknown): Progress {
  const o: Record<string, unknown> = typeof p === 'object' && p !== null ? { ...p } : {};
  const step = finite(o.step);
  const totalSteps = finite(o.totalSteps);
  const percent = finite(o.percent) ?? (step !== null && totalSteps ? (100 * step) / totalSteps : null);
  return {
    percent: percent === null ? null : Math.max(0, Math.min(100, percent)),
    step,
    totalSteps,
    loss: finite(o.loss),
    evalLoss: finite(o.evalLoss),
    tokensPerSecond: finite(o.tokensPerSecond),
    etaSeconds: finite(o.etaSeconds),
  };
}

export function duration(s: number): string {
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
