/** Redis from Debian: daemonized on a free port with its own dir and an append-only file. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { aptInstall, choosePort, killPid, pidAlive, tcpExchange, waitFor } from './proc.ts';
import { type Service, ServiceError } from './types.ts';

const BIN = '/usr/bin/redis-server';

function readPid(dir: string): number {
  try {
    return Number(readFileSync(join(dir, 'redis.pid'), 'utf8').trim());
  } catch {
    return 0;
  }
}

const ping = async (port: number) => (await tcpExchange(port, 'PING\r\n')).startsWith('+PONG');

export const redis: Service = {
  async install(ctx) {
    aptInstall(ctx, 'redis-server', BIN);
  },

  async start(ctx, previous) {
    const port = await choosePort(previous?.port);
    const log = join(ctx.dir, 'redis.log');
    const r = ctx.run(BIN, [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      ctx.dir,
      '--daemonize',
      'yes',
      '--pidfile',
      join(ctx.dir, 'redis.pid'),
      '--logfile',
      log,
      '--appendonly',
      'yes',
      '--save',
      '',
      '--protected-mode',
      'yes',
    ]);
    if (r.status !== 0) throw new ServiceError(`redis-server did not start: ${r.stderr}; see ${log}`);
    await waitFor('redis', () => ping(port), 20_000, log);
    const url = `redis://127.0.0.1:${port}`;
    return { pid: readPid(ctx.dir), port, url, env: { REDIS_URL: url } };
  },

  async alive(ctx, state) {
    return pidAlive(readPid(ctx.dir)) && (await ping(state.port).catch(() => false));
  },

  async stop(ctx, state) {
    await killPid(readPid(ctx.dir) || state.pid);
  },
};
