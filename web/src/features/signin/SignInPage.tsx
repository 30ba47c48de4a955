/**
 * Sign in with an API token: checked against GET /v1/me before it is kept (sessionStorage,
 * this tab only), so a typo or an expired token says so at once.
 */
import { type FormEvent, useState } from 'react';
import { api, type Problem } from '../../api/client.ts';
import { toProblem } from '../../api/problem.ts';
import { setToken } from '../../api/token.ts';
import { navigate } from '../../app/router.tsx';

export function SignInPage({ next }: { next: string | null }) {
  const [value, setValue] = useState('');
  const [problem, setProblem] = useState<Problem | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setProblem(null);
    const token = value.trim();
    try {
      const r = await api.GET('/v1/me', { headers: { Authorization: `Bearer ${token}` } });
      if (r.data) {
        setToken(token);
        navigate(next?.startsWith('/') && !next.startsWith('/signin') ? next : '/');
      } else setProblem(toProblem(r.error, r.response));
    } catch (err) {
      setProblem(toProblem(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="narrow">
      <h1>Sign in</h1>
      <p>
        Paste an API token (<code>lrk_…</code>). <code>lora login</code> and <code>npm start</code> (file <code>.lowrank/admin-token</code>)
        give you one. It stays in this tab only and is sent to the registry with every request.
      </p>
      <form onSubmit={submit} className="stack">
        <label htmlFor="token">API token</label>
        <input
          id="token"
          type="password"
          autoComplete="off"
          required
          value={value}
          onChange={(e) => setValue(e.target.value)}
          aria-describedby={problem ? 'token-error' : undefined}
          aria-invalid={problem ? true : undefined}
        />
        {problem && (
          <p id="token-error" className="error" role="alert">
            {problem.status === 401 ? 'The registry does not accept this token: ' : ''}
            {problem.detail}
          </p>
        )}
        <button type="submit" disabled={busy || value.trim() === ''}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </section>
  );
}
