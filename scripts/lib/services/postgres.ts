/** PostgreSQL from Debian: initdb once, pg_ctl start on a free port, database `lowrank`. */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { aptInstall, choosePort, killPid, pidAlive } from './proc.ts';
import { type Service, type ServiceContext, ServiceError, type ServiceState } from './types.ts';

const DB = 'lowrank';
const isRoot = () => process.getuid?.() === 0;

function binDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(base, versions[0], 'bin') : undefined;
}

/** PostgreSQL refuses to run as root: run its tools as the `postgres` user then. */
function asPg(ctx: ServiceContext, cmd: string, args: string[]) {
  return isRoot() ? ctx.run('runuser', ['-u', 'postgres', '--', cmd, ...args]) : ctx.run(cmd, args);
}

/**
 * Where the cluster lives: <dir>/data, with the log beside it. As root the directory must
 * be reachable by `postgres` (a checkout under /root is not), else a /tmp dir is used.
 */
function dataDir(ctx: ServiceContext): string {
  const preferred = join(ctx.dir, 'data');
  if (!isRoot()) return preferred;
  mkdirSync(preferred, { recursive: true });
  ctx.run('chown', ['-R', 'postgres:postgres', ctx.dir]);
  if (ctx.run('runuser', ['-u', 'postgres', '--', 'test', '-w', preferred]).status === 0) return preferred;
  const base = join(tmpdir(), `lowrank-pg-${createHash('sha256').update(ctx.dir).digest('hex').slice(0, 12)}`);
  mkdirSync(join(base, 'data'), { recursive: true });
  ctx.run('chown', ['-R', 'postgres:postgres', base]);
  ctx.log(`postgres cannot reach ${preferred}; using ${base}`);
  return join(base, 'data');
}

function readPid(data: string): number {
  try {
    return Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return 0;
  }
}

export const postgres: Service = {
  async install(ctx) {
    if (!binDir()) aptInstall(ctx, 'postgresql', '/usr/bin/psql');
    if (!binDir()) throw new ServiceError('PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; install `postgresql`');
  },

  async start(ctx, previous) {
    const bin = binDir() as string;
    const data = previous?.extra?.dataDir ?? dataDir(ctx);
    const log = join(dirname(data), 'postgres.log');
    if (!existsSync(join(data, 'PG_VERSION'))) {
      ctx.log(`initdb in ${data}`);
      const r = asPg(ctx, join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-instructions']);
      if (r.status !== 0) throw new ServiceError(`initdb failed:\n${r.stderr.slice(-2000)}`);
    }
    const stale = readPid(data);
    if (stale && !pidAlive(stale)) ctx.log('removing the pid file of a postgres that is no longer running');
    const port = await choosePort(previous?.port);
    const opts = `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''`;
    const r = asPg(ctx, join(bin, 'pg_ctl'), ['-D', data, '-l', log, '-w', '-t', '60', '-o', opts, 'start']);
    if (r.status !== 0) throw new ServiceError(`postgres did not start on port ${port}: ${r.stderr || r.stdout}; see ${log}`);
    const psql = (sql: string) => asPg(ctx, join(bin, 'psql'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-tAc', sql]);
    if (psql(`select 1 from pg_database where datname = '${DB}'`).stdout.trim() !== '1') {
      const c = psql(`create database ${DB}`);
      if (c.status !== 0) throw new ServiceError(`could not create database ${DB}: ${c.stderr}`);
    }
    const url = `postgresql://postgres@127.0.0.1:${port}/${DB}`;
    return { pid: readPid(data), port, url, env: { DATABASE_URL: url }, extra: { dataDir: data } };
  },

  async alive(ctx, state: ServiceState) {
    const data = state.extra?.dataDir ?? '';
    const pid = readPid(data);
    if (!pid || !pidAlive(pid)) return false;
    const bin = binDir();
    return !!bin && ctx.run(join(bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(state.port), '-q']).status === 0;
  },

  async stop(ctx, state) {
    const data = state.extra?.dataDir ?? '';
    const pid = readPid(data) || state.pid;
    const bin = binDir();
    if (bin && pidAlive(pid)) asPg(ctx, join(bin, 'pg_ctl'), ['-D', data, '-w', '-t', '30', '-m', 'fast', 'stop']);
    await killPid(pid);
  },
};
