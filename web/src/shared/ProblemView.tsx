/**
 * How a failed call shows: 401 asks to sign in, 403 says the token may not, 404 says
 * nothing is there, anything else shows the registry's code and detail.
 */
import type { Problem } from '../api/client.ts';
import { href, Link } from '../app/router.tsx';

export function ProblemView({ problem, what }: { problem: Problem; what?: string }) {
  const back = window.location.pathname + window.location.search;
  if (problem.status === 401)
    return (
      <div className="state state-auth" role="alert">
        <h2>Sign in to see {what ?? 'this'}</h2>
        <p>{problem.detail}</p>
        <p>
          <Link to={href('/signin', { next: back })}>Sign in with an API token</Link>
        </p>
      </div>
    );
  if (problem.status === 403)
    return (
      <div className="state state-forbidden" role="alert">
        <h2>Not allowed</h2>
        <p>
          Your token may not access {what ?? 'this'}: {problem.detail}
        </p>
        <p>
          Ask a maintainer of the team for access, or <Link to={href('/signin', { next: back })}>sign in with another token</Link>.
        </p>
      </div>
    );
  if (problem.status === 404)
    return (
      <div className="state state-missing" role="alert">
        <h2>Not found</h2>
        <p>{problem.detail}</p>
      </div>
    );
  return (
    <div className="state state-error" role="alert">
      <h2>{problem.title}</h2>
      <p>
        <code>{problem.code}</code> {problem.detail}
      </p>
      {problem.errors && problem.errors.length > 0 && (
        <ul>
          {problem.errors.map((e) => (
            <li key={`${e.path}:${e.message}`}>
              <code>{e.path}</code>: {e.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="state state-loading" aria-live="polite">
      Loading {what}…
    </p>
  );
}
