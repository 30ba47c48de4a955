/** Who the token in this tab belongs to (GET /v1/me), with sign in / sign out. */
import { api } from '../../api/client.ts';
import { setToken, useToken } from '../../api/token.ts';
import { useApi } from '../../api/use-api.ts';
import { href, Link, navigate } from '../../app/router.tsx';

export function WhoAmI() {
  const token = useToken();
  const [me] = useApi((signal) => (token ? api.GET('/v1/me', { signal }) : Promise.reject(new Error('anonymous'))), [token]);
  if (!token)
    return (
      <div className="who">
        <Link to={href('/signin', { next: window.location.pathname + window.location.search })}>Sign in</Link>
      </div>
    );
  return (
    <div className="who">
      {me.status === 'ok' && (
        <span>
          <span className="visually-hidden">Signed in as </span>
          <strong data-testid="me">{me.data.handle}</strong> <span className="badge">{me.data.scope}</span>
        </span>
      )}
      {me.status === 'error' && <span className="warn">token rejected</span>}
      <button
        type="button"
        className="link"
        onClick={() => {
          setToken(null);
          navigate('/');
        }}
      >
        Sign out
      </button>
    </div>
  );
}
