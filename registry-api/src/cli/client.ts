/** A small client for the registry's REST API: JSON in and out, problems as LowrankErrors. */
import { type ErrorCode, LowrankError } from '@lowrank/crds/errors';
import type { CliConfig } from './config.ts';

export class RegistryClient {
  readonly base: string;
  private readonly token: string | undefined;

  constructor(config: CliConfig) {
    this.base = config.registry.replace(/\/$/, '');
    this.token = config.token;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token ? { authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  async request(
    method: string,
    path: string,
    init: { body?: unknown; raw?: RequestInit['body']; headers?: Record<string, string>; duplex?: 'half' } = {},
  ): Promise<Response> {
    const headers = this.headers(init.headers);
    let body: RequestInit['body'] | undefined = init.raw;
    if (init.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.body);
    }
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        ...(init.duplex ? { duplex: init.duplex } : {}),
      } as RequestInit);
    } catch (err) {
      throw new LowrankError(
        'unavailable',
        `cannot reach the registry at ${this.base}: ${(err as Error).cause ?? (err as Error).message}; check --registry or LOWRANK_REGISTRY`,
      );
    }
    if (res.ok || res.status === 304 || (method === 'HEAD' && res.status === 404)) return res;
    let problem: { code?: ErrorCode; detail?: string; errors?: { path: string; message: string }[] } = {};
    try {
      problem = (await res.json()) as typeof problem;
    } catch {}
    throw new LowrankError(
      problem.code ?? (res.status >= 500 ? 'unavailable' : 'invalid_request'),
      problem.detail ?? `${method} ${path}: HTTP ${res.status}`,
      {
        errors: problem.errors ?? [],
      },
    );
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await (await this.request(method, path, body === undefined ? {} : { body })).json()) as T;
  }
}

/** "ns/name", "ns/name@3" or "ns/name@prod". */
export function parseRef(ref: string, defaultRef = 'latest'): { repo: string; ref: string } {
  const m = /^([a-z0-9-]+\/[a-z0-9-]+)(?:@([A-Za-z0-9._-]+))?$/.exec(ref);
  if (!m)
    throw new LowrankError(
      'invalid_request',
      `"${ref}" is not a repository reference; write namespace/name or namespace/name@version-or-tag`,
    );
  return { repo: m[1] as string, ref: m[2] ?? defaultRef };
}
