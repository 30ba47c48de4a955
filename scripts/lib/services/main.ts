/**
 * scripts/services: real PostgreSQL, Redis and MinIO (S3), and a Kubernetes test cluster
 * (etcd, kube-apiserver, kube-controller-manager, kube-scheduler; see kube.ts) as local
 * processes on free loopback ports, each with its own data dir under the state dir,
 * stopped by PID.
 *
 *   scripts/services start [names...]                     (default: all)
 *   scripts/services stop [names...]                      (default: all running)
 *   scripts/services status | env | install [names...]
 *
 * Installs what is missing (Debian packages for PostgreSQL and Redis; MinIO, etcd and the
 * Kubernetes components built once from the Go module proxy into $LOWRANK_CACHE/bin), writes the URLs to
 * <state>/services.env, and is idempotent: a running service is left as it is.
 * State dir: $LOWRANK_STATE_DIR, default <repo>/.lowrank/services.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { etcd, kubeApiserver, kubeControllerManager, kubeScheduler } from './kube.ts';
import { minio } from './minio.ts';
import { postgres } from './postgres.ts';
import { redis } from './redis.ts';
import { type Service, type ServiceContext, ServiceError, type ServiceState } from './types.ts';

// Start order matters for the cluster: each component needs the ones before it.
const SERVICES: Record<string, Service> = {
  postgres,
  redis,
  minio,
  etcd,
  'kube-apiserver': kubeApiserver,
  'kube-controller-manager': kubeControllerManager,
  'kube-scheduler': kubeScheduler,
};

const root = resolve(import.meta.dirname, '../../..');
const stateDir = resolve(process.env.LOWRANK_STATE_DIR ?? join(root, '.lowrank', 'services'));
const cacheDir = resolve(process.env.LOWRANK_CACHE ?? join(homedir(), '.cache', 'lowrank'));
const stateFile = join(stateDir, 'services.json');
const envFile = join(stateDir, 'services.env');

function loadState(): Record<string, ServiceState> {
  try {
    return JSON.parse(readFileSync(stateFile, 'utf8')) as Record<string, ServiceState>;
  } catch {
    return {};
  }
}

function saveState(state: Record<string, ServiceState>): void {
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(stateFile, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  const lines = ['# Written by scripts/services; source it or read it with `scripts/services env`.'];
  for (const s of Object.values(state)) {
    if (s.pid > 0) for (const [k, v] of Object.entries(s.env)) lines.push(`${k}=${v}`);
  }
  writeFileSync(envFile, `${lines.join('\n')}\n`, { mode: 0o600 });
  chmodSync(envFile, 0o600);
}

function context(name: string): ServiceContext {
  const dir = join(stateDir, name);
  mkdirSync(dir, { recursive: true });
  return {
    dir,
    cacheDir,
    log: (msg) => console.error(`[${name}] ${msg}`),
    secret: () => randomBytes(18).toString('base64url'),
    run: (cmd, args, opts = {}) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
      if (r.error) throw new ServiceError(`${cmd} could not start: ${r.error.message}`);
      return { status: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
    },
  };
}

function pick(args: string[], fallback: string[]): string[] {
  const names = args.length > 0 ? args : fallback;
  for (const n of names) {
    if (!SERVICES[n]) throw new ServiceError(`unknown service "${n}"; choose from ${Object.keys(SERVICES).join(', ')}`);
  }
  return names;
}

async function main(): Promise<void> {
  const [command = 'status', ...args] = process.argv.slice(2);
  const state = loadState();
  switch (command) {
    case 'install':
      for (const n of pick(args, Object.keys(SERVICES))) await SERVICES[n]?.install(context(n));
      break;
    case 'start': {
      for (const n of pick(args, Object.keys(SERVICES))) {
        const svc = SERVICES[n] as Service;
        const ctx = context(n);
        const prev = state[n];
        if (prev && prev.pid > 0 && (await svc.alive(ctx, prev))) {
          ctx.log(`already running (pid ${prev.pid}) at ${prev.url}`);
          continue;
        }
        await svc.install(ctx);
        const started = Date.now();
        state[n] = await svc.start(ctx, prev);
        saveState(state);
        ctx.log(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s (pid ${state[n].pid}) at ${state[n].url}`);
      }
      console.error(`env file: ${envFile}`);
      break;
    }
    case 'stop':
      // Reverse start order: controllers before the apiserver before etcd.
      for (const n of pick(
        args,
        Object.keys(SERVICES).filter((k) => (state[k]?.pid ?? 0) > 0),
      ).reverse()) {
        const prev = state[n];
        if (!prev || prev.pid === 0) continue;
        const ctx = context(n);
        await (SERVICES[n] as Service).stop(ctx, prev);
        ctx.log(`stopped (pid ${prev.pid})`);
        // Keep port, credentials and data dir so the next start looks the same.
        state[n] = { ...prev, pid: 0 };
        saveState(state);
      }
      break;
    case 'status':
      for (const n of Object.keys(SERVICES)) {
        const prev = state[n];
        const up = prev && prev.pid > 0 ? await (SERVICES[n] as Service).alive(context(n), prev) : false;
        console.log(`${n.padEnd(23)} ${up ? `running  pid ${prev?.pid}  ${prev?.url}` : 'stopped'}`);
      }
      break;
    case 'env':
      if (!existsSync(envFile)) throw new ServiceError('no services started yet; run `scripts/services start` first');
      process.stdout.write(readFileSync(envFile, 'utf8'));
      break;
    default:
      throw new ServiceError(`unknown command "${command}"; use start, stop, status, env or install`);
  }
}

main().catch((err: unknown) => {
  if (err instanceof ServiceError) {
    console.error(`error: ${err.message}`);
    process.exit(1);
  }
  throw err;
});
