/**
 * THE ONLY FAKE in the test cluster: a node agent standing in for the kubelet and the
 * container runtime, which cannot run here. It registers a Node (allocatable CPU, memory,
 * nvidia.com/gpu), takes the pods the real kube-scheduler binds to it, runs each
 * container's command and args as a local child process with the container's env (values,
 * Secret/ConfigMap refs, envFrom), reports pod phase and container statuses (exit codes,
 * reasons, termination messages) through pods/status, stores logs under
 * <dir>/<namespace>/<pod>/<container>.log, and kills the processes when pods are deleted.
 *
 * What it ignores: the image (the command runs on this machine's PATH), resource limits,
 * probes, init containers, and mount namespaces (see volumes.ts for the path rewriting).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  CoreV1Api,
  type KubeConfig,
  type V1Container,
  type V1ContainerStatus,
  type V1EnvVar,
  type V1Node,
  type V1Pod,
  type V1PodCondition,
  Watch,
} from '@kubernetes/client-node';
import { materializeVolumes, pathMapper, type Sources } from './volumes.ts';

export interface AgentOptions {
  nodeName: string;
  /** Where pod dirs and logs go. */
  dir: string;
  cpu: string;
  memory: string;
  gpus: number;
  labels?: Record<string, string>;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

interface Running {
  uid: string;
  children: Map<string, ChildProcess>;
  statuses: Map<string, V1ContainerStatus>;
  finished: Promise<void>;
  killed: boolean;
}

const MAX_MESSAGE = 4096; // what the kubelet keeps of a termination message

const decode = (data: Record<string, string> | undefined) =>
  data === undefined ? undefined : Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));

const errCode = (err: unknown) => (err as { code?: number }).code;

export class NodeAgent {
  readonly opts: AgentOptions;
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  private readonly pods = new Map<string, Running>();
  private abort: AbortController | undefined;
  private stopped = false;
  private readonly log: (msg: string, fields?: Record<string, unknown>) => void;

  constructor(kc: KubeConfig, opts: AgentOptions) {
    this.kc = kc;
    this.opts = opts;
    this.core = kc.makeApiClient(CoreV1Api);
    this.log = opts.log ?? ((msg, fields) => console.log(JSON.stringify({ time: new Date().toISOString(), msg, ...fields })));
  }

  podDir(namespace: string, name: string): string {
    return join(this.opts.dir, namespace, name);
  }

  async start(): Promise<void> {
    await this.registerNode();
    await this.sync();
    void this.watchLoop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    await Promise.all([...this.pods.values()].map((r) => this.killAll(r, 2000)));
  }

  private async registerNode(): Promise<void> {
    const { nodeName, cpu, memory, gpus } = this.opts;
    const resources = { cpu, memory, pods: '110', 'nvidia.com/gpu': String(gpus), 'ephemeral-storage': '100Gi' };
    const now = new Date();
    const status: V1Node['status'] = {
      capacity: resources,
      allocatable: resources,
      addresses: [
        { type: 'InternalIP', address: '127.0.0.1' },
        { type: 'Hostname', address: nodeName },
      ],
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'NodeAgentReady',
          message: 'test node agent',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
      nodeInfo: {
        architecture: 'amd64',
        operatingSystem: 'linux',
        kubeletVersion: 'lowrank-test-node-agent',
        kubeProxyVersion: '',
        containerRuntimeVersion: 'local-process://0',
        bootID: '',
        kernelVersion: '',
        machineID: '',
        osImage: 'local',
        systemUUID: '',
      },
    };
    const body: V1Node = {
      metadata: {
        name: nodeName,
        labels: {
          'kubernetes.io/hostname': nodeName,
          'kubernetes.io/os': 'linux',
          'lowrank.dev/test-node-agent': 'true',
          ...this.opts.labels,
        },
      },
      status,
    };
    try {
      await this.core.createNode({ body });
    } catch (err) {
      if (errCode(err) !== 409) throw err;
    }
    // Status is a subresource: set it explicitly (create may drop it).
    const node = await this.core.readNode({ name: nodeName });
    node.status = status;
    await this.core.replaceNodeStatus({ name: nodeName, body: node });
    // The apiserver's TaintNodesByCondition admission taints a new node not-ready; the
    // node lifecycle controller (not run here, it would evict) lifts it once Ready.
    // A node left by an earlier agent keeps its name; give it this run's labels.
    const fresh = await this.core.readNode({ name: nodeName });
    fresh.metadata = { ...fresh.metadata, labels: { ...fresh.metadata?.labels, ...body.metadata?.labels } };
    if (fresh.spec?.taints) fresh.spec.taints = fresh.spec.taints.filter((t) => t.key !== 'node.kubernetes.io/not-ready');
    await this.core.replaceNode({ name: nodeName, body: fresh });
    this.log('node registered', { node: nodeName, cpu, memory, gpus });
  }

  /** Level-based: list the node's pods and bring each to where it should be. */
  private async sync(): Promise<string | undefined> {
    const list = await this.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${this.opts.nodeName}` });
    const seen = new Set<string>();
    for (const pod of list.items) {
      seen.add(pod.metadata?.uid ?? '');
      this.handle(pod);
    }
    for (const [key, r] of this.pods) if (!seen.has(r.uid)) void this.forget(key, r);
    return list.metadata?.resourceVersion;
  }

  private async watchLoop(): Promise<void> {
    while (!this.stopped) {
      try {
        const rv = await this.sync();
        await new Promise<void>((resolve) => {
          void new Watch(this.kc)
            .watch(
              '/api/v1/pods',
              { fieldSelector: `spec.nodeName=${this.opts.nodeName}`, resourceVersion: rv, allowWatchBookmarks: true },
              (type, pod: V1Pod) => {
                if (type === 'DELETED') {
                  const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
                  const r = this.pods.get(key);
                  if (r) void this.forget(key, r);
                } else if (type !== 'BOOKMARK') this.handle(pod);
              },
              () => resolve(),
            )
            .then(
              (a) => {
                this.abort = a;
              },
              () => resolve(),
            );
        });
      } catch (err) {
        if (!this.stopped) this.log('watch failed; relisting', { error: String(err) });
      }
      if (!this.stopped) await new Promise((r) => setTimeout(r, 500));
    }
  }

  private handle(pod: V1Pod): void {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    const r = this.pods.get(key);
    if (pod.metadata?.deletionTimestamp) {
      void this.terminate(pod, r);
      return;
    }
    if (r) return; // running, or finished and reported
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return;
    if (phase === 'Running') {
      // Running by an earlier agent process whose children died with it.
      void this.reportLost(pod);
      return;
    }
    void this.run(pod).catch((err) => this.log('pod failed to start', { pod: key, error: String(err) }));
  }

  private sources(): Sources {
    return {
      configMap: async (namespace, name) => {
        try {
          const cm = await this.core.readNamespacedConfigMap({ namespace, name });
          return cm.data ?? {};
        } catch (err) {
          if (errCode(err) === 404) return undefined;
          throw err;
        }
      },
      secret: async (namespace, name) => {
        try {
          const s = await this.core.readNamespacedSecret({ namespace, name });
          return { ...decode(s.data), ...s.stringData };
        } catch (err) {
          if (errCode(err) === 404) return undefined;
          throw err;
        }
      },
    };
  }

  private async resolveEnv(pod: V1Pod, c: V1Container, map: (v: string) => string): Promise<Record<string, string>> {
    const ns = pod.metadata?.namespace ?? 'default';
    const src = this.sources();
    const env: Record<string, string> = {
      // What a container image and the kubelet would provide.
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      HOSTNAME: pod.metadata?.name ?? '',
      KUBERNETES_SERVICE_HOST: '127.0.0.1',
      KUBERNETES_SERVICE_PORT: new URL(this.kc.getCurrentCluster()?.server ?? 'https://127.0.0.1:443').port,
    };
    for (const from of c.envFrom ?? []) {
      const data = from.configMapRef
        ? await src.configMap(ns, from.configMapRef.name ?? '')
        : from.secretRef
          ? await src.secret(ns, from.secretRef.name ?? '')
          : undefined;
      const optional = from.configMapRef?.optional ?? from.secretRef?.optional ?? false;
      if (!data && !optional) throw new Error(`envFrom source of container ${c.name} not found`);
      for (const [k, v] of Object.entries(data ?? {})) env[`${from.prefix ?? ''}${k}`] = v;
    }
    for (const e of c.env ?? []) {
      const v = await this.envValue(pod, e, src);
      if (v !== undefined) env[e.name] = map(v.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string) => env[name] ?? m));
    }
    return env;
  }

  private async envValue(pod: V1Pod, e: V1EnvVar, src: Sources): Promise<string | undefined> {
    if (e.value !== undefined) return e.value;
    const ns = pod.metadata?.namespace ?? 'default';
    const ref = e.valueFrom;
    if (ref?.secretKeyRef) {
      const v = (await src.secret(ns, ref.secretKeyRef.name ?? ''))?.[ref.secretKeyRef.key];
      if (v === undefined && !ref.secretKeyRef.optional)
        throw new Error(`env ${e.name}: secret ${ref.secretKeyRef.name} key ${ref.secretKeyRef.key} not found`);
      return v;
    }
    if (ref?.configMapKeyRef) {
      const v = (await src.configMap(ns, ref.configMapKeyRef.name ?? ''))?.[ref.configMapKeyRef.key];
      if (v === undefined && !ref.configMapKeyRef.optional)
        throw new Error(`env ${e.name}: configMap ${ref.configMapKeyRef.name} key ${ref.configMapKeyRef.key} not found`);
      return v;
    }
    if (ref?.fieldRef) {
      const path = ref.fieldRef.fieldPath;
      const fields: Record<string, string | undefined> = {
        'metadata.name': pod.metadata?.name,
        'metadata.namespace': pod.metadata?.namespace,
        'metadata.uid': pod.metadata?.uid,
        'spec.nodeName': pod.spec?.nodeName,
        'spec.serviceAccountName': pod.spec?.serviceAccountName,
        'status.podIP': '127.0.0.1',
        'status.hostIP': '127.0.0.1',
      };
      const label = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
      if (label) return (label[1] === 'labels' ? pod.metadata?.labels : pod.metadata?.annotations)?.[label[2] as string];
      return fields[path];
    }
    return undefined;
  }

  private async run(pod: V1Pod): Promise<void> {
    const ns = pod.metadata?.namespace ?? 'default';
    const name = pod.metadata?.name ?? '';
    const key = `${ns}/${name}`;
    const r: Running = {
      uid: pod.metadata?.uid ?? '',
      children: new Map(),
      statuses: new Map(),
      finished: Promise.resolve(),
      killed: false,
    };
    this.pods.set(key, r);
    const dir = this.podDir(ns, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const startTime = new Date();
    let volumes: Map<string, string>;
    const prepared: { c: V1Container; env: Record<string, string>; map: (v: string) => string }[] = [];
    try {
      volumes = await materializeVolumes(pod, dir, this.sources());
      for (const c of pod.spec?.containers ?? []) {
        const mapped = pathMapper(c, volumes, join(dir, `${c.name}.termination-log`));
        // The "image" is this machine's file system, rooted where the agent runs (the repository):
        // its paths are never volume paths, even when a mount (e.g. /tmp) is a prefix of them.
        const image = process.cwd();
        const map = (v: string) => (v === image || v.startsWith(`${image}/`) ? v : mapped(v));
        prepared.push({ c, map, env: await this.resolveEnv(pod, c, map) });
      }
    } catch (err) {
      // The kubelet's CreateContainerConfigError: the pod stays Pending with a waiting reason.
      await this.writeStatus(pod, {
        phase: 'Pending',
        containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
          name: c.name,
          image: c.image ?? '',
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { waiting: { reason: 'CreateContainerConfigError', message: String((err as Error).message ?? err) } },
        })),
      });
      this.pods.delete(key);
      setTimeout(() => void this.retryPending(pod), 2000);
      return;
    }
    const exits: Promise<void>[] = [];
    for (const { c, env, map } of prepared) {
      const argv = [...(c.command ?? []), ...(c.args ?? [])].map(map);
      const [cmd, ...args] = argv;
      const logFile = join(dir, `${c.name}.log`);
      const messageFile = join(dir, `${c.name}.termination-log`);
      const started = new Date();
      r.statuses.set(c.name, {
        name: c.name,
        image: c.image ?? '',
        imageID: '',
        ready: true,
        started: true,
        restartCount: 0,
        state: { running: { startedAt: started } },
      });
      if (!cmd) {
        r.statuses.set(
          c.name,
          this.terminated(c, 128, 'ContainerCannotRun', 'no command: the test agent runs commands, not images', started),
        );
        continue;
      }
      const out = openSync(logFile, 'a');
      const child = spawn(cmd, args, { cwd: c.workingDir ? map(c.workingDir) : dir, env, stdio: ['ignore', out, out] });
      closeSync(out);
      r.children.set(c.name, child);
      exits.push(
        new Promise<void>((resolve) => {
          child.on('error', (err) => {
            r.statuses.set(c.name, this.terminated(c, 127, 'ContainerCannotRun', err.message, started));
            resolve();
          });
          child.on('exit', (code, signal) => {
            const exitCode = code ?? (signal === 'SIGKILL' ? 137 : 143);
            let message = existsSync(messageFile) ? readFileSync(messageFile, 'utf8').slice(0, MAX_MESSAGE) : '';
            if (!message && exitCode !== 0 && c.terminationMessagePolicy === 'FallbackToLogsOnError') {
              message = readFileSync(logFile, 'utf8').split('\n').slice(-80).join('\n').slice(-2048);
            }
            r.statuses.set(c.name, this.terminated(c, exitCode, exitCode === 0 ? 'Completed' : 'Error', message, started));
            resolve();
          });
        }),
      );
    }
    this.log('pod started', { pod: key, containers: prepared.map((p) => p.c.name) });
    await this.writeStatus(pod, { phase: 'Running', startTime });
    r.finished = Promise.all(exits).then(async () => {
      if (r.killed) return;
      const failed = [...r.statuses.values()].some((s) => (s.state?.terminated?.exitCode ?? 0) !== 0);
      this.log('pod finished', { pod: key, phase: failed ? 'Failed' : 'Succeeded' });
      await this.writeStatus(pod, { phase: failed ? 'Failed' : 'Succeeded', startTime });
    });
    await r.finished;
  }

  private async retryPending(pod: V1Pod): Promise<void> {
    if (this.stopped) return;
    try {
      const fresh = await this.core.readNamespacedPod({ namespace: pod.metadata?.namespace ?? '', name: pod.metadata?.name ?? '' });
      this.handle(fresh);
    } catch {}
  }

  private terminated(c: V1Container, exitCode: number, reason: string, message: string, startedAt: Date): V1ContainerStatus {
    return {
      name: c.name,
      image: c.image ?? '',
      imageID: '',
      ready: false,
      started: false,
      restartCount: 0,
      state: { terminated: { exitCode, reason, message: message || undefined, startedAt, finishedAt: new Date() } },
    };
  }

  private async writeStatus(pod: V1Pod, s: { phase: string; startTime?: Date; containerStatuses?: V1ContainerStatus[] }): Promise<void> {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    const r = this.pods.get(key);
    const now = new Date();
    const ready = s.phase === 'Running' ? 'True' : 'False';
    const cond = (type: string, status: string): V1PodCondition => ({ type, status, lastTransitionTime: now });
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        const fresh = await this.core.readNamespacedPod({ namespace: pod.metadata?.namespace ?? '', name: pod.metadata?.name ?? '' });
        if (fresh.metadata?.uid !== pod.metadata?.uid) return;
        fresh.status = {
          ...fresh.status,
          phase: s.phase,
          hostIP: '127.0.0.1',
          hostIPs: [{ ip: '127.0.0.1' }],
          podIP: '127.0.0.1',
          podIPs: [{ ip: '127.0.0.1' }],
          startTime: s.startTime ?? fresh.status?.startTime,
          conditions: [cond('PodScheduled', 'True'), cond('Initialized', 'True'), cond('ContainersReady', ready), cond('Ready', ready)],
          containerStatuses: s.containerStatuses ?? [...(r?.statuses.values() ?? [])],
        };
        await this.core.replaceNamespacedPodStatus({
          namespace: pod.metadata?.namespace ?? '',
          name: pod.metadata?.name ?? '',
          body: fresh,
        });
        return;
      } catch (err) {
        const code = errCode(err);
        if (code === 404) return;
        if (code !== 409) this.log('pod status update failed', { pod: key, error: String(err) });
        await new Promise((res) => setTimeout(res, 100 * (attempt + 1)));
      }
    }
  }

  private async reportLost(pod: V1Pod): Promise<void> {
    const statuses = (pod.spec?.containers ?? []).map((c) =>
      this.terminated(c, 137, 'ContainerLost', 'the test node agent restarted and lost this process', new Date()),
    );
    await this.writeStatus(pod, { phase: 'Failed', containerStatuses: statuses });
  }

  private async killAll(r: Running, graceMs: number): Promise<void> {
    r.killed = true;
    const alive = [...r.children.values()].filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of alive) c.kill('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && alive.some((c) => c.exitCode === null && c.signalCode === null)) {
      await new Promise((res) => setTimeout(res, 50));
    }
    for (const c of alive) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }

  /** deletionTimestamp set: SIGTERM, grace period, SIGKILL, then the kubelet's final delete. */
  private async terminate(pod: V1Pod, r: Running | undefined): Promise<void> {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    if (r && !r.killed) {
      this.log('pod deleted: stopping its processes', { pod: key });
      await this.killAll(r, Math.min(pod.metadata?.deletionGracePeriodSeconds ?? 30, 10) * 1000);
    }
    try {
      await this.core.deleteNamespacedPod({
        namespace: pod.metadata?.namespace ?? '',
        name: pod.metadata?.name ?? '',
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata?.uid } }, // the body wins over the query parameter
      });
    } catch (err) {
      if (errCode(err) !== 404 && errCode(err) !== 409) this.log('final pod delete failed', { pod: key, error: String(err) });
    }
  }

  private async forget(key: string, r: Running): Promise<void> {
    this.pods.delete(key);
    await this.killAll(r, 2000);
  }

  /** A container's stored log (what `kubectl logs` would show). */
  logs(namespace: string, pod: string, container: string): string {
    const f = join(this.podDir(namespace, pod), `${container}.log`);
    return existsSync(f) ? readFileSync(f, 'utf8') : '';
  }
}
