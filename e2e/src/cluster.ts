/**
 * Helpers for tests on the real test cluster (scripts/services: etcd, kube-apiserver,
 * controller-manager, scheduler): kubectl, a namespace per test file, the test node agent
 * and the operator as child processes that a test can kill and restart.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';

export const ROOT = resolve(import.meta.dirname, '../..');

export function kubeEnv(): { kubeconfig: string; kubectl: string } {
  const kubeconfig = process.env.KUBECONFIG;
  if (!kubeconfig)
    throw new Error('KUBECONFIG is not set: run the tests with `npm test`, which starts the test cluster (scripts/services)');
  return { kubeconfig, kubectl: process.env.LOWRANK_KUBECTL || 'kubectl' };
}

export function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeEnv().kubeconfig);
  return kc;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** kubectl, async (never spawnSync: it would block in-process servers). */
export function kubectl(args: string[], input?: string): Promise<RunResult> {
  const { kubectl: bin, kubeconfig } = kubeEnv();
  return new Promise((res) => {
    const child = execFile(bin, [`--kubeconfig=${kubeconfig}`, ...args], { maxBuffer: 32 << 20 }, (err, stdout, stderr) =>
      res({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
}

export const runId = () => randomBytes(3).toString('hex');

/** A child process with its output in a log file; stop() by PID. */
export class Proc {
  child: ChildProcess;
  readonly logFile: string;
  readonly args: string[];
  readonly env: NodeJS.ProcessEnv;

  constructor(args: string[], env: NodeJS.ProcessEnv, logFile: string) {
    this.args = args;
    this.env = env;
    this.logFile = logFile;
    this.child = this.spawn();
  }

  private spawn(): ChildProcess {
    const out = openSync(this.logFile, 'a');
    return spawn(process.execPath, this.args, { cwd: ROOT, env: this.env, stdio: ['ignore', out, out] });
  }

  restart(): void {
    this.child = this.spawn();
  }

  log(): string {
    return readFileSync(this.logFile, 'utf8');
  }

  /** SIGKILL mid-anything (a crash), or SIGTERM with a graceful wait. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM', timeoutMs = 15_000): Promise<number | null> {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null) return c.exitCode;
    const exited = new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
    c.kill(signal);
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    const code = await exited;
    clearTimeout(t);
    return code;
  }
}

export function stateDir(name: string): string {
  const d = join(ROOT, '.lowrank', 'e2e', name);
  mkdirSync(d, { recursive: true });
  return d;
}

/** The test node agent (the one fake) with labels that pin this run's pods to it. */
export function startAgent(id: string, labels: Record<string, string>, node = `e2e-node-${id}`): Proc {
  const dir = stateDir(`agent-${node}`);
  // A roomy node: the tests run many jobs at once, and capacity is not what they test.
  const args = ['e2e/src/node-agent/main.ts', '--dir', join(dir, 'pods'), '--node', node, '--cpu', '64', '--memory', '1Ti', '--gpus', '16'];
  for (const [k, v] of Object.entries(labels)) args.push('--label', `${k}=${v}`);
  return new Proc(args, { ...process.env, KUBECONFIG: kubeEnv().kubeconfig }, join(dir, 'agent.log'));
}

export const STANDIN_COMMAND = ['node', 'e2e/src/worker-standin.ts', 'run'];

export function startOperator(id: string, namespace: string, extraEnv: Record<string, string> = {}): Proc {
  const dir = stateDir(`operator-${id}`);
  return new Proc(
    ['operator/src/main.ts'],
    {
      ...process.env,
      KUBECONFIG: kubeEnv().kubeconfig,
      LOWRANK_REGISTRY_URL: process.env.LOWRANK_E2E_REGISTRY_URL ?? 'http://127.0.0.1:9',
      LOWRANK_WORKER_COMMAND: JSON.stringify(STANDIN_COMMAND),
      LOWRANK_WORKER_WORKDIR: ROOT,
      LOWRANK_WATCH_NAMESPACE: namespace,
      LOWRANK_LEASE_NAMESPACE: namespace,
      LOWRANK_HTTP_HOST: '127.0.0.1',
      LOWRANK_HTTP_PORT: '0',
      LOWRANK_RESYNC_SECONDS: '10',
      LOWRANK_LEASE_DURATION_SECONDS: '4',
      LOWRANK_PROGRESS_SECONDS: '1',
      ...extraEnv,
    },
    join(dir, 'operator.log'),
  );
}

export function apis(kc: KubeConfig) {
  return { core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi) };
}
