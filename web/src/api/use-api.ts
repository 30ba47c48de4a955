/**
 * Loads one API result for a component: loading, data or a problem, refetched when its
 * inputs or the signed-in token change, and abandoned when the component moves on.
 */
import { useCallback, useEffect, useState } from 'react';
import type { Problem } from './client.ts';
import { toProblem } from './problem.ts';
import { useToken } from './token.ts';

export type Loaded<T> = { status: 'loading' } | { status: 'ok'; data: T } | { status: 'error'; problem: Problem };

/** What openapi-fetch returns: data on success, the parsed error body otherwise. */
export interface FetchResult<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

export function useApi<T>(load: (signal: AbortSignal) => Promise<FetchResult<T>>, deps: readonly unknown[]): [Loaded<T>, () => void] {
  const token = useToken();
  const [state, setState] = useState<Loaded<T>>({ status: 'loading' });
  const [round, setRound] = useState(0);
  const reload = useCallback(() => setRound((n) => n + 1), []);
  // biome-ignore lint/correctness/useExhaustiveDependencies: the caller's deps say when `load` changes.
  useEffect(() => {
    const abort = new AbortController();
    setState({ status: 'loading' });
    load(abort.signal).then(
      (r) => {
        if (abort.signal.aborted) return;
        if (r.data !== undefined && r.response.ok) setState({ status: 'ok', data: r.data });
        else setState({ status: 'error', problem: toProblem(r.error, r.response) });
      },
      (err: unknown) => {
        if (!abort.signal.aborted) setState({ status: 'error', problem: toProblem(err) });
      },
    );
    return () => abort.abort();
  }, [...deps, token, round]);
  return [state, reload];
}
