/**
 * MinIO, the S3-compatible server, built once from the Go module proxy at a pinned
 * pseudo-version (upstream publishes source only and is in maintenance mode) and
 * cached in $LOWRANK_CACHE/bin. Started detached with its own credentials.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { choosePort, freePort, killPid, pidAlive, waitFor } from './proc.ts';
import { type Service, type ServiceContext, ServiceError } from './types.ts';

export const MINIO_MODULE = 'github.com/minio/minio';
export const MINIO_VERSION = 'v0.0.0-20260212201848-7aac2a2c5b7c';

function goBinary(ctx: ServiceContext): string {
  for (const candidate of ['go', '/usr/local/go/bin/go']) {
    if (ctx.run(candidate, ['version']).status === 0) return candidate;
  }
  throw new ServiceError('Go is needed to build MinIO once; install Go >= 1.24 (https://go.dev/doc/install) and run again');
}

const binPath = (ctx: ServiceContext) => join(ctx.cacheDir, 'bin', `minio-${MINIO_VERSION}`);

function readPid(dir: string): number {
  try {
    return Number(readFileSync(join(dir, 'minio.pid'), 'utf8').trim());
  } catch {
    return 0;
  }
}

async function ready(port: number): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${port}/minio/health/ready`, { signal: AbortSignal.timeout(1000) });
  return res.ok;
}

export const minio: Service = {
  async install(ctx) {
    const target = binPath(ctx);
    if (existsSync(target)) return;
    const go = goBinary(ctx);
    const gobin = join(ctx.cacheDir, 'build', `minio-${process.pid}`);
    mkdirSync(gobin, { recursive: true });
    ctx.log(`building ${MINIO_MODULE}@${MINIO_VERSION} from the Go module proxy (once; a few minutes)`);
    const r = ctx.run(go, ['install', '-trimpath', '-ldflags', '-s -w', `${MINIO_MODULE}@${MINIO_VERSION}`], {
      env: { ...process.env, GOBIN: gobin, CGO_ENABLED: '0', GOFLAGS: '-mod=mod' },
    });
    if (r.status !== 0) throw new ServiceError(`building MinIO failed:\n${r.stderr.slice(-3000)}`);
    mkdirSync(join(ctx.cacheDir, 'bin'), { recursive: true });
    renameSync(join(gobin, 'minio'), target); // atomic: a half-built binary is never cached
    rmSync(gobin, { recursive: true, force: true });
  },

  async start(ctx, previous) {
    const port = await choosePort(previous?.port);
    const consolePort = await freePort();
    const user = previous?.extra?.user ?? `lowrank-${ctx.secret().slice(0, 8)}`;
    const password = previous?.extra?.password ?? ctx.secret();
    const data = join(ctx.dir, 'data');
    mkdirSync(data, { recursive: true });
    const log = join(ctx.dir, 'minio.log');
    const out = openSync(log, 'a');
    const child = spawn(
      binPath(ctx),
      ['server', '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${consolePort}`, '--quiet', data],
      {
        detached: true,
        stdio: ['ignore', out, out],
        env: {
          ...process.env,
          MINIO_ROOT_USER: user,
          MINIO_ROOT_PASSWORD: password,
          MINIO_BROWSER: 'off',
          MINIO_UPDATE: 'off',
          MINIO_CI_CD: '1',
        },
      },
    );
    child.unref();
    if (!child.pid) throw new ServiceError(`minio did not start; see ${log}`);
    writeFileSync(join(ctx.dir, 'minio.pid'), `${child.pid}\n`);
    await waitFor('minio', async () => pidAlive(child.pid as number) && (await ready(port)), 60_000, log);
    const url = `http://127.0.0.1:${port}`;
    return {
      pid: child.pid,
      port,
      url,
      env: {
        S3_ENDPOINT: url,
        S3_REGION: 'us-east-1',
        S3_ACCESS_KEY_ID: user,
        S3_SECRET_ACCESS_KEY: password,
        S3_FORCE_PATH_STYLE: 'true',
      },
      extra: { user, password },
    };
  },

  async alive(ctx, state) {
    return pidAlive(readPid(ctx.dir)) && (await ready(state.port).catch(() => false));
  },

  async stop(ctx, state) {
    await killPid(readPid(ctx.dir) || state.pid);
  },
};
