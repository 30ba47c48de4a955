/** Process and port helpers shared by the service drivers. */
import { existsSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { type ServiceContext, ServiceError } from './types.ts';

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A port that was free a moment ago (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolvePort(addr.port) : reject(new Error('no port'))));
    });
  });
}

export function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

/** The previous port if it is still free (stable URLs across restarts), else a new one. */
export async function choosePort(previous: number | undefined): Promise<number> {
  if (previous && (await portFree(previous))) return previous;
  return freePort();
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await sleep(100);
  }
  throw new ServiceError(`${what} did not become ready in ${timeoutMs / 1000} s${logFile ? `; see ${logFile}` : ''}`);
}

/** Sends SIGTERM, waits, then SIGKILL: only ever the PID this tool started. */
export async function killPid(pid: number, graceMs = 10_000): Promise<void> {
  if (!pidAlive(pid)) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return;
    await sleep(50);
  }
  process.kill(pid, 'SIGKILL');
}

/** One request/response over TCP, for protocol-level readiness checks. */
export function tcpExchange(port: number, payload: string, timeoutMs = 1000): Promise<string> {
  return new Promise((res, rej) => {
    const sock = new Socket();
    let data = '';
    const timer = setTimeout(() => {
      sock.destroy();
      rej(new Error('timeout'));
    }, timeoutMs);
    sock.on('data', (d) => {
      data += d.toString();
      clearTimeout(timer);
      sock.end();
      res(data);
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    sock.connect(port, '127.0.0.1', () => sock.write(payload));
  });
}

/** apt-get install, only as root and only when the package is missing. */
export function aptInstall(ctx: ServiceContext, pkg: string, provides: string): void {
  if (existsSync(provides)) return;
  if (process.getuid?.() !== 0) {
    throw new ServiceError(`${provides} is missing; install it with \`sudo apt-get install -y ${pkg}\` and run again`);
  }
  ctx.log(`installing ${pkg} from Debian`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = ctx.run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', pkg], { env });
  if (r.status !== 0) {
    ctx.run('apt-get', ['update', '-qq'], { env });
    r = ctx.run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', pkg], { env });
  }
  if (r.status !== 0 || !existsSync(provides)) {
    throw new ServiceError(`apt-get install ${pkg} failed:\n${r.stderr.slice(-2000)}`);
  }
}
