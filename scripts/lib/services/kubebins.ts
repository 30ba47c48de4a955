/**
 * Real Kubernetes control-plane binaries built from the Go module proxy, once, and cached
 * by version in $LOWRANK_CACHE/bin (never committed). See shared/notes/k8s-testinfra.md.
 *
 * - kube-apiserver, kube-controller-manager, kube-scheduler: `go install k8s.io/kubernetes/...`
 *   fails (its staging modules are required at v0.0.0), so a wrapper module replaces each
 *   staging module with its published v0.<minor>.<patch>, generated from k/k's own go.mod.
 *   Version variables are stamped with -ldflags so /version reports the real version (helm
 *   and kubectl read it).
 * - etcd: the server module has relative replaces, so it is built through a wrapper too.
 *
 * Builds run sequentially with `-p 2` (each compile of the generated openapi packages takes
 * 3-4 GB); `node scripts/lib/services/kubebins.ts` builds everything ahead of time.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ServiceError } from './types.ts';

export const KUBE_VERSION = '1.34.4';
export const ETCD_VERSION = 'v3.6.14';
export const HELM_VERSION = 'v3.21.4';
export const KUBE_COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const;
export type KubeComponent = (typeof KUBE_COMPONENTS)[number];

const log = (msg: string) => console.error(`[kubebins] ${msg}`);

export function cacheDir(): string {
  return process.env.LOWRANK_CACHE ?? join(homedir(), '.cache', 'lowrank');
}

export function kubeBinary(name: KubeComponent): string {
  return join(cacheDir(), 'bin', `${name}-v${KUBE_VERSION}`);
}

export function etcdBinary(): string {
  return join(cacheDir(), 'bin', `etcd-${ETCD_VERSION}`);
}

function goBinary(): string {
  for (const candidate of ['go', '/usr/local/go/bin/go']) {
    if (spawnSync(candidate, ['version']).status === 0) return candidate;
  }
  throw new ServiceError('Go >= 1.24 is needed to build the Kubernetes test binaries once; install Go and run again');
}

function goEnv(): NodeJS.ProcessEnv {
  // -p 2: the machine is small and shared; GOFLAGS=-mod=mod lets `go build` fill go.sum.
  return { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod -p=2', GOMAXPROCS: process.env.GOMAXPROCS ?? '2' };
}

function go(args: string[], cwd: string): string {
  const started = Date.now();
  const r = spawnSync(goBinary(), args, { cwd, env: goEnv(), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new ServiceError(`go ${args.join(' ')} failed in ${cwd}:\n${(r.stderr ?? '').slice(-4000)}`);
  const secs = (Date.now() - started) / 1000;
  if (secs > 5) log(`go ${args[0]} ${args.length > 1 ? args[1] : ''}… took ${secs.toFixed(0)} s`);
  return r.stdout;
}

/** The wrapper go.mod: every staging module pinned to its published v0.x.y. */
function prepareKubeWrapper(dir: string): void {
  if (existsSync(join(dir, 'go.mod')) && readFileSync(join(dir, 'go.mod'), 'utf8').includes('k8s.io/kubernetes')) return;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  go(['mod', 'init', 'local/kubebins'], dir);
  const info = JSON.parse(go(['mod', 'download', '-json', `k8s.io/kubernetes@v${KUBE_VERSION}`], dir)) as { GoMod: string };
  const kkMod = readFileSync(info.GoMod, 'utf8');
  const v0 = `v0.${KUBE_VERSION.split('.').slice(1).join('.')}`;
  const staging = [...kkMod.matchAll(/^\s*(k8s\.io\/\S+)\s+=>\s+\.\/staging\//gm)].map((m) => m[1] as string);
  if (staging.length < 20) throw new ServiceError(`unexpected k8s.io/kubernetes go.mod: only ${staging.length} staging replaces`);
  go(['mod', 'edit', ...staging.map((m) => `-replace=${m}=${m}@${v0}`)], dir);
  // Same runtime defaults as upstream builds (e.g. `godebug default=go1.24`).
  const godebug = kkMod.split('\n').filter((l) => l.startsWith('godebug'));
  if (godebug.length > 0) writeFileSync(join(dir, 'go.mod'), `${readFileSync(join(dir, 'go.mod'), 'utf8')}\n${godebug.join('\n')}\n`);
  go(['get', ...KUBE_COMPONENTS.map((c) => `k8s.io/kubernetes/cmd/${c}@v${KUBE_VERSION}`)], dir);
}

/** -ldflags stamping the version variables as hack/lib/version.sh does. */
function stampFlags(): string[] {
  const minor = KUBE_VERSION.split('.')[1];
  const ldflags = ['-s', '-w'];
  for (const p of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
    ldflags.push(`-X ${p}.gitVersion=v${KUBE_VERSION}`, `-X ${p}.gitMajor=1`, `-X ${p}.gitMinor=${minor}`, `-X ${p}.gitTreeState=clean`);
  }
  return ldflags;
}

export function ensureKubeBinaries(): void {
  if (KUBE_COMPONENTS.every((c) => existsSync(kubeBinary(c)))) return;
  const dir = join(cacheDir(), 'build', `kube-${KUBE_VERSION}`);
  log(`building kube-apiserver, kube-controller-manager, kube-scheduler v${KUBE_VERSION} from the Go module proxy (once; 10-20 min)`);
  prepareKubeWrapper(dir);
  const ldflags = stampFlags();
  const out = join(dir, 'out');
  mkdirSync(out, { recursive: true });
  mkdirSync(join(cacheDir(), 'bin'), { recursive: true });
  // One at a time: each link peaks at 1-2 GB and the compiles share the build cache anyway.
  for (const c of KUBE_COMPONENTS) {
    if (existsSync(kubeBinary(c))) continue;
    go(['build', '-trimpath', '-ldflags', ldflags.join(' '), '-o', join(out, c), `k8s.io/kubernetes/cmd/${c}`], dir);
    renameSync(join(out, c), kubeBinary(c)); // atomic: a half-built binary is never cached
  }
}

/**
 * kubectl within one minor of the apiserver: the image's google-cloud-sdk copies when
 * present (no build), else built from the same wrapper module.
 */
export function ensureKubectl(): string {
  const minor = Number(KUBE_VERSION.split('.')[1]);
  for (const m of [minor, minor - 1, minor + 1]) {
    const candidate = `/usr/lib/google-cloud-sdk/bin/kubectl.1.${m}`;
    if (existsSync(candidate)) return candidate;
  }
  const bin = join(cacheDir(), 'bin', `kubectl-v${KUBE_VERSION}`);
  if (existsSync(bin)) return bin;
  const dir = join(cacheDir(), 'build', `kube-${KUBE_VERSION}`);
  prepareKubeWrapper(dir);
  log(`building kubectl v${KUBE_VERSION} (once)`);
  mkdirSync(join(dir, 'out'), { recursive: true });
  go(['build', '-trimpath', '-ldflags', stampFlags().join(' '), '-o', join(dir, 'out', 'kubectl'), 'k8s.io/kubernetes/cmd/kubectl'], dir);
  renameSync(join(dir, 'out', 'kubectl'), bin);
  return bin;
}

export function ensureEtcd(): void {
  if (existsSync(etcdBinary())) return;
  const dir = join(cacheDir(), 'build', `etcd-${ETCD_VERSION}`);
  log(`building etcd ${ETCD_VERSION} from the Go module proxy (once; a few minutes)`);
  if (!existsSync(join(dir, 'go.mod'))) {
    mkdirSync(dir, { recursive: true });
    go(['mod', 'init', 'local/etcdbin'], dir);
    go(['get', `go.etcd.io/etcd/server/v3@${ETCD_VERSION}`], dir);
  }
  const out = join(dir, 'etcd');
  go(['build', '-trimpath', '-ldflags', '-s -w', '-o', out, 'go.etcd.io/etcd/server/v3'], dir);
  mkdirSync(join(cacheDir(), 'bin'), { recursive: true });
  renameSync(out, etcdBinary());
}

export function helmBinary(): string {
  return join(cacheDir(), 'bin', `helm-${HELM_VERSION}`);
}

/**
 * helm, built with `go install` (its go.mod has no replaces). The ldflags set the version
 * and the Kubernetes minor `helm lint/template` assume without a cluster (else v1.20).
 */
export function ensureHelm(): string {
  const bin = helmBinary();
  if (existsSync(bin)) return bin;
  const minor = KUBE_VERSION.split('.')[1];
  const gobin = join(cacheDir(), 'build', `helm-${process.pid}`);
  mkdirSync(gobin, { recursive: true });
  log(`building helm ${HELM_VERSION} from the Go module proxy (once; a few minutes)`);
  const ldflags = [
    '-s -w',
    `-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}`,
    `-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}`,
    `-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor}`,
  ].join(' ');
  const r = spawnSync(goBinary(), ['install', '-trimpath', '-ldflags', ldflags, `helm.sh/helm/v3/cmd/helm@${HELM_VERSION}`], {
    env: { ...goEnv(), GOBIN: gobin },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new ServiceError(`building helm failed:\n${(r.stderr ?? '').slice(-3000)}`);
  mkdirSync(join(cacheDir(), 'bin'), { recursive: true });
  renameSync(join(gobin, 'helm'), bin);
  rmSync(gobin, { recursive: true, force: true });
  return bin;
}

if (import.meta.main && process.argv[2] === 'helm') {
  console.log(ensureHelm());
} else if (import.meta.main) {
  const t0 = Date.now();
  ensureEtcd();
  log(`etcd ready after ${((Date.now() - t0) / 1000).toFixed(0)} s: ${etcdBinary()}`);
  const t1 = Date.now();
  ensureKubeBinaries();
  log(`kube binaries ready after ${((Date.now() - t1) / 1000).toFixed(0)} s`);
  for (const c of KUBE_COMPONENTS) console.log(kubeBinary(c));
  console.log(etcdBinary());
}
