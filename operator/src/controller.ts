/**
 * Watches (list + watch informers) on the three custom resource kinds and on the Jobs the
 * operator owns, feeding one work queue of resource keys; a periodic resync re-queues
 * every resource, so a missed event only delays convergence. Started when this replica
 * becomes leader.
 */
import {
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type Informer,
  type KubeConfig,
  type KubernetesObject,
  makeInformer,
  type ObjectCache,
  type V1Job,
} from '@kubernetes/client-node';
import type { Logger } from '@lowrank/crds';
import type { OperatorConfig } from './config.ts';
import { EventRecorder } from './events.ts';
import type { Resource } from './job-spec.ts';
import { GROUP, KIND_NAMES, KINDS, type Kind, key, LABELS, MANAGED_BY, parseKey, VERSION } from './kinds.ts';
import type { Metrics } from './metrics.ts';
import { WorkQueue } from './queue.ts';
import { Reconciler } from './reconciler.ts';

type Watched = Informer<KubernetesObject> & ObjectCache<KubernetesObject>;

export class Controller {
  private readonly kc: KubeConfig;
  private readonly cfg: OperatorConfig;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly informers = new Map<string, Watched>();
  private readonly synced = new Set<string>();
  private queue: WorkQueue | undefined;
  private resync: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(kc: KubeConfig, cfg: OperatorConfig, log: Logger, metrics: Metrics) {
    this.kc = kc;
    this.cfg = cfg;
    this.log = log;
    this.metrics = metrics;
  }

  get ready(): boolean {
    return this.synced.size === KIND_NAMES.length + 1;
  }

  private resources(): Resource[] {
    const out: Resource[] = [];
    for (const kind of KIND_NAMES) {
      for (const o of this.informers.get(kind)?.list() ?? []) out.push({ ...(o as Resource), kind });
    }
    return out;
  }

  async start(): Promise<void> {
    const custom = this.kc.makeApiClient(CustomObjectsApi);
    const batch = this.kc.makeApiClient(BatchV1Api);
    const core = this.kc.makeApiClient(CoreV1Api);
    const reconciler = new Reconciler({
      custom,
      batch,
      core,
      cfg: this.cfg,
      log: this.log,
      metrics: this.metrics,
      events: new EventRecorder(core, this.cfg.identity, this.log),
      listResources: () => this.resources(),
    });
    this.queue = new WorkQueue({
      concurrency: this.cfg.concurrency,
      handler: async (k) => {
        const { kind, namespace, name } = parseKey(k);
        const end = this.metrics.reconcileSeconds.startTimer({ kind });
        try {
          const r = await reconciler.reconcile(kind, namespace, name);
          this.metrics.reconciles.inc({ kind, result: r.requeueAfterMs === undefined ? 'ok' : 'requeue' });
          return r;
        } catch (err) {
          this.metrics.reconciles.inc({ kind, result: 'error' });
          throw err;
        } finally {
          end();
        }
      },
      onError: (k, err, retryMs) => this.log.warn({ resource: k, err, retryMs }, 'reconcile failed; retrying'),
      onDepth: (n) => this.metrics.queueDepth.set(n),
    });

    const ns = this.cfg.watchNamespace;
    for (const kind of KIND_NAMES) {
      const plural = KINDS[kind].plural;
      const path = ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${plural}` : `/apis/${GROUP}/${VERSION}/${plural}`;
      const list = () =>
        (ns
          ? custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural })
          : custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as Promise<never>;
      this.watch(kind, makeInformer(this.kc, path, list) as Watched, (o) => this.enqueueResource(kind, o));
    }
    const selector = `${LABELS.managedBy}=${MANAGED_BY}`;
    const jobsPath = ns ? `/apis/batch/v1/namespaces/${ns}/jobs` : '/apis/batch/v1/jobs';
    const listJobs = () =>
      (ns
        ? batch.listNamespacedJob({ namespace: ns, labelSelector: selector })
        : batch.listJobForAllNamespaces({ labelSelector: selector })) as Promise<never>;
    this.watch('jobs', makeInformer(this.kc, jobsPath, listJobs, selector) as Watched, (o) => this.enqueueOwner(o as V1Job));

    await Promise.all([...this.informers.entries()].map(([name, inf]) => this.startInformer(name, inf)));
    this.resync = setInterval(() => {
      for (const r of this.resources()) this.queue?.add(key(r.kind, r.metadata.namespace, r.metadata.name));
    }, this.cfg.resyncSeconds * 1000);
    this.resync.unref();
    this.log.info({ namespace: ns || '(all)' }, 'controller started');
  }

  private watch(name: string, informer: Watched, enqueue: (o: KubernetesObject) => void): void {
    for (const verb of ['add', 'update', 'delete'] as const) informer.on(verb, enqueue);
    informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      this.log.warn({ informer: name, err }, 'watch ended; restarting');
      setTimeout(() => void this.startInformer(name, informer), 1000).unref();
    });
    this.informers.set(name, informer);
  }

  private async startInformer(name: string, informer: Watched): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      try {
        await informer.start();
        this.synced.add(name);
        return;
      } catch (err) {
        this.log.warn({ informer: name, err }, 'list failed; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private enqueueResource(kind: Kind, o: KubernetesObject): void {
    if (o.metadata?.namespace && o.metadata.name) this.queue?.add(key(kind, o.metadata.namespace, o.metadata.name));
  }

  private enqueueOwner(job: V1Job): void {
    const owner = job.metadata?.ownerReferences?.find((r) => r.controller && r.apiVersion.startsWith(`${GROUP}/`));
    if (owner && job.metadata?.namespace && owner.kind in KINDS)
      this.queue?.add(key(owner.kind as Kind, job.metadata.namespace, owner.name));
  }

  /** Stops watching and waits for in-flight reconciles (each is safe to cut, but finishing is cleaner). */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    if (this.resync) clearInterval(this.resync);
    await this.queue?.drain(timeoutMs);
    await Promise.all([...this.informers.values()].map((i) => i.stop().catch(() => {})));
  }
}
