/**
 * A test cluster of real Kubernetes components as local processes: etcd, kube-apiserver
 * (token auth + RBAC, self-signed serving cert), kube-controller-manager (job, garbage
 * collector, namespace, service account, TTL-after-finished controllers) and kube-scheduler,
 * each on free loopback ports, each stopped by its PID. There is no kubelet: the test node
 * agent (e2e/src/node-agent/) plays that part.
 *
 * Shared files live in <state>/kube: tokens.csv, sa.key, pki/apiserver.crt (written by the
 * apiserver itself), admin.kubeconfig. The services run in the order etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler; each reads the ports of the ones before it
 * from services.json.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { dirname, join } from 'node:path';
import { ensureEtcd, ensureKubeBinaries, ensureKubectl, etcdBinary, KUBE_VERSION, kubeBinary } from './kubebins.ts';
import { choosePort, freePort, killPid, pidAlive, waitFor } from './proc.ts';
import { type Service, type ServiceContext, ServiceError, type ServiceState } from './types.ts';

/** Shared dir of the cluster (sibling of each component's own dir). */
const kubeDir = (ctx: ServiceContext) => {
  const d = join(dirname(ctx.dir), 'kube');
  mkdirSync(d, { recursive: true });
  return d;
};

function siblingState(ctx: ServiceContext, name: string): ServiceState {
  let all: Record<string, ServiceState> = {};
  try {
    all = JSON.parse(readFileSync(join(dirname(ctx.dir), 'services.json'), 'utf8')) as Record<string, ServiceState>;
  } catch {}
  const s = all[name];
  if (!s || s.pid <= 0 || !pidAlive(s.pid))
    throw new ServiceError(`${name} is not running; start it first (scripts/services start ${name})`);
  return s;
}

function readPid(ctx: ServiceContext, name: string): number {
  try {
    return Number(readFileSync(join(ctx.dir, `${name}.pid`), 'utf8').trim());
  } catch {
    return 0;
  }
}

function launch(ctx: ServiceContext, name: string, bin: string, args: string[]): number {
  const log = join(ctx.dir, `${name}.log`);
  const out = openSync(log, 'a');
  const child = spawn(bin, args, { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  if (!child.pid) throw new ServiceError(`${name} did not start; see ${log}`);
  writeFileSync(join(ctx.dir, `${name}.pid`), `${child.pid}\n`);
  return child.pid;
}

/** GET over HTTPS, trusting the given CA file, or anything when it does not exist yet. */
export function httpsGet(url: string, opts: { ca?: string; token?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ca = opts.ca && existsSync(opts.ca) ? readFileSync(opts.ca) : undefined;
    const req = request(
      url,
      {
        ca,
        rejectUnauthorized: ca !== undefined,
        headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
        timeout: 2000,
      },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const logTail = (ctx: ServiceContext, name: string) => join(ctx.dir, `${name}.log`);

export const etcd: Service = {
  async install() {
    ensureEtcd();
  },
  async start(ctx, previous) {
    const port = await choosePort(previous?.port);
    const peer = await freePort();
    const data = join(ctx.dir, 'data');
    const args = [
      '--name=n0',
      `--data-dir=${data}`,
      `--listen-client-urls=http://127.0.0.1:${port}`,
      `--advertise-client-urls=http://127.0.0.1:${port}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=n0=http://127.0.0.1:${peer}`,
      '--unsafe-no-fsync=true', // a throwaway test store; fsync only slows the shared disk
      '--log-level=warn',
    ];
    const pid = launch(ctx, 'etcd', etcdBinary(), args);
    await waitFor(
      'etcd',
      async () => pidAlive(pid) && (await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) })).ok,
      30_000,
      logTail(ctx, 'etcd'),
    );
    const url = `http://127.0.0.1:${port}`;
    return { pid, port, url, env: { LOWRANK_ETCD_URL: url } };
  },
  async alive(ctx, state) {
    const pid = readPid(ctx, 'etcd') || state.pid;
    return pidAlive(pid) && (await fetch(`${state.url}/health`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok));
  },
  async stop(ctx, state) {
    await killPid(readPid(ctx, 'etcd') || state.pid);
  },
};

function writeKubeconfig(path: string, server: string, ca: string, token: string, user: string): void {
  // JSON is valid YAML; kubectl and @kubernetes/client-node read it.
  const cfg = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'lowrank-test', cluster: { server, 'certificate-authority': ca } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: 'lowrank-test', context: { cluster: 'lowrank-test', user } }],
    'current-context': 'lowrank-test',
  };
  writeFileSync(path, `${JSON.stringify(cfg, null, 2)}\n`, { mode: 0o600 });
}

export const kubeApiserver: Service = {
  async install() {
    ensureKubeBinaries();
  },
  async start(ctx, previous) {
    const etcdState = siblingState(ctx, 'etcd');
    const dir = kubeDir(ctx);
    const port = await choosePort(previous?.port);
    const adminToken = previous?.extra?.adminToken ?? ctx.secret();
    // csv: token,user,uid,"groups". system:masters bypasses RBAC; everything else goes through it.
    writeFileSync(join(dir, 'tokens.csv'), `${adminToken},lowrank-admin,lowrank-admin,"system:masters"\n`, { mode: 0o600 });
    const saKey = join(dir, 'sa.key');
    if (!existsSync(saKey)) {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      writeFileSync(saKey, privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
    }
    const pki = join(dir, 'pki');
    mkdirSync(pki, { recursive: true });
    const args = [
      `--etcd-servers=${etcdState.url}`,
      '--etcd-prefix=/lowrank-test',
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${port}`,
      `--cert-dir=${pki}`, // no --tls-cert-file: the apiserver self-signs apiserver.crt/key here
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${saKey}`,
      `--service-account-signing-key-file=${saKey}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      '--allow-privileged=true',
      '--enable-priority-and-fairness=false', // fewer background writes on a 2-core machine
      '--endpoint-reconciler-type=none',
    ];
    const pid = launch(ctx, 'kube-apiserver', kubeBinary('kube-apiserver'), args);
    const ca = join(pki, 'apiserver.crt');
    const url = `https://127.0.0.1:${port}`;
    await waitFor(
      'kube-apiserver',
      async () => pidAlive(pid) && existsSync(ca) && (await httpsGet(`${url}/readyz`, { ca })).status === 200,
      120_000,
      logTail(ctx, 'kube-apiserver'),
    );
    const kubeconfig = join(dir, 'admin.kubeconfig');
    writeKubeconfig(kubeconfig, url, ca, adminToken, 'lowrank-admin');
    return {
      pid,
      port,
      url,
      env: { KUBECONFIG: kubeconfig, LOWRANK_KUBE_APISERVER: url, LOWRANK_KUBE_VERSION: KUBE_VERSION, LOWRANK_KUBECTL: ensureKubectl() },
      extra: { adminToken },
    };
  },
  async alive(ctx, state) {
    const pid = readPid(ctx, 'kube-apiserver') || state.pid;
    if (!pidAlive(pid)) return false;
    const r = await httpsGet(`${state.url}/readyz`, { ca: join(kubeDir(ctx), 'pki', 'apiserver.crt') }).catch(() => undefined);
    return r?.status === 200;
  },
  async stop(ctx, state) {
    await killPid(readPid(ctx, 'kube-apiserver') || state.pid);
  },
};

/** Asks the apiserver (as admin) for a path; used to see the controllers at work. */
async function adminGet(ctx: ServiceContext, path: string): Promise<number> {
  const api = siblingState(ctx, 'kube-apiserver');
  const r = await httpsGet(`${api.url}${path}`, { ca: join(kubeDir(ctx), 'pki', 'apiserver.crt'), token: api.extra?.adminToken ?? '' });
  return r.status;
}

export const kubeControllerManager: Service = {
  async install() {
    ensureKubeBinaries();
  },
  async start(ctx) {
    siblingState(ctx, 'kube-apiserver');
    const dir = kubeDir(ctx);
    const args = [
      `--kubeconfig=${join(dir, 'admin.kubeconfig')}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--secure-port=0', // no health endpoint needed: readiness is the default ServiceAccount appearing
      // No nodelifecycle/podgc: they would taint and evict the test agent's node.
      '--controllers=job,garbagecollector,namespace,serviceaccount,serviceaccount-token,ttl-after-finished',
      `--service-account-private-key-file=${join(dir, 'sa.key')}`,
      `--root-ca-file=${join(dir, 'pki', 'apiserver.crt')}`,
      '--concurrent-job-syncs=5',
    ];
    const pid = launch(ctx, 'kube-controller-manager', kubeBinary('kube-controller-manager'), args);
    await waitFor(
      'kube-controller-manager',
      async () => pidAlive(pid) && (await adminGet(ctx, '/api/v1/namespaces/default/serviceaccounts/default')) === 200,
      90_000,
      logTail(ctx, 'kube-controller-manager'),
    );
    return { pid, port: 0, url: '', env: {} };
  },
  async alive(ctx, state) {
    return pidAlive(readPid(ctx, 'kube-controller-manager') || state.pid);
  },
  async stop(ctx, state) {
    await killPid(readPid(ctx, 'kube-controller-manager') || state.pid);
  },
};

export const kubeScheduler: Service = {
  async install() {
    ensureKubeBinaries();
  },
  async start(ctx, previous) {
    siblingState(ctx, 'kube-apiserver');
    const port = await choosePort(previous?.port);
    const args = [
      `--kubeconfig=${join(kubeDir(ctx), 'admin.kubeconfig')}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
    ];
    const pid = launch(ctx, 'kube-scheduler', kubeBinary('kube-scheduler'), args);
    const url = `https://127.0.0.1:${port}`;
    await waitFor(
      'kube-scheduler',
      async () => pidAlive(pid) && (await httpsGet(`${url}/readyz`)).status === 200,
      60_000,
      logTail(ctx, 'kube-scheduler'),
    );
    return { pid, port, url, env: {} };
  },
  async alive(ctx, state) {
    const pid = readPid(ctx, 'kube-scheduler') || state.pid;
    return pidAlive(pid) && (await httpsGet(`${state.url}/healthz`).then((r) => r.status === 200));
  },
  async stop(ctx, state) {
    await killPid(readPid(ctx, 'kube-scheduler') || state.pid);
  },
};
