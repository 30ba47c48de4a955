/**
 * One reconcile of one custom resource: level-based and idempotent. It reads the resource,
 * its Job and the Job's pods fresh from the apiserver, derives the status from them, and
 * writes only what differs. Every write is safe to repeat: the Job and ConfigMap have
 * deterministic names (AlreadyExists means "done"), the status is recomputed, not
 * accumulated, and an Event is emitted only on a phase transition. A crash anywhere in
 * here is fixed by the next reconcile.
 */
import {
  type BatchV1Api,
  type CoreV1Api,
  type CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type V1Job,
  type V1Pod,
} from '@kubernetes/client-node';
import type { Logger } from '@lowrank/crds';
import { admit } from './admission.ts';
import { type Condition, setCondition } from './conditions.ts';
import type { OperatorConfig } from './config.ts';
import type { EventRecorder } from './events.ts';
import { blockingProducers } from './inputs.ts';
import { buildConfigMap, buildJob, type Resource } from './job-spec.ts';
import { FINALIZER, GROUP, jobName, KINDS, type Kind, VERSION } from './kinds.ts';
import type { Metrics } from './metrics.ts';
import { type Observation, observeJob, type Phase } from './outcome.ts';
import { createRegistryJob, fetchProgress, type Progress, REGISTRY_JOB_ANNOTATION, registryJobId } from './progress.ts';

export interface ReconcileResult {
  /** Look again after this long even without a watch event. */
  requeueAfterMs?: number;
}

export interface ReconcilerDeps {
  custom: CustomObjectsApi;
  batch: BatchV1Api;
  core: CoreV1Api;
  cfg: OperatorConfig;
  log: Logger;
  metrics: Metrics;
  events: EventRecorder;
  /** Custom resources known to the informers (for merge inputs). */
  listResources: () => Resource[];
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const code = (err: unknown) => (err as { code?: number }).code;
const TERMINAL: Phase[] = ['Succeeded', 'Failed'];
const INPUTS_AVAILABLE = 'no input is still being produced by another resource';

function progressText(progress: unknown): string {
  const pr = progress as { step?: number; totalSteps?: number; percent?: number } | undefined;
  if (pr?.step !== undefined && pr.totalSteps) return `${pr.step}/${pr.totalSteps}`;
  if (pr?.percent !== undefined) return `${pr.percent}%`;
  return 'running';
}

export class Reconciler {
  private readonly d: ReconcilerDeps;

  constructor(deps: ReconcilerDeps) {
    this.d = deps;
  }

  private count(verb: string): void {
    this.d.metrics.apiRequests.inc({ verb });
  }

  private async getResource(kind: Kind, namespace: string, name: string): Promise<Resource | undefined> {
    this.count('get');
    try {
      const obj = (await this.d.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: KINDS[kind].plural,
        name,
      })) as Resource;
      return { ...obj, kind };
    } catch (err) {
      if (code(err) === 404) return undefined;
      throw err;
    }
  }

  private async getJob(namespace: string, name: string): Promise<V1Job | undefined> {
    this.count('get');
    try {
      return await this.d.batch.readNamespacedJob({ namespace, name });
    } catch (err) {
      if (code(err) === 404) return undefined;
      throw err;
    }
  }

  private async patchResource(cr: Resource, body: object, status: boolean): Promise<Resource> {
    this.count('patch');
    const args = {
      group: GROUP,
      version: VERSION,
      namespace: cr.metadata.namespace,
      plural: KINDS[cr.kind].plural,
      name: cr.metadata.name,
      body,
    };
    const out = status
      ? await this.d.custom.patchNamespacedCustomObjectStatus(args, mergePatch)
      : await this.d.custom.patchNamespacedCustomObject(args, mergePatch);
    return { ...(out as Resource), kind: cr.kind };
  }

  async reconcile(kind: Kind, namespace: string, name: string): Promise<ReconcileResult> {
    let cr = await this.getResource(kind, namespace, name);
    if (!cr) return {}; // gone: its Job and ConfigMap are owned by it and collected by the GC
    const jn = jobName(kind, name);
    const log = this.d.log.child({ resource: `${kind}/${namespace}/${name}`, job: jn });

    if (cr.metadata.deletionTimestamp) return this.finalize(cr, jn, log);

    if (!cr.metadata.finalizers?.includes(FINALIZER)) {
      // resourceVersion makes this a compare-and-swap: a concurrent edit is a conflict, retried.
      cr = await this.patchResource(
        cr,
        { metadata: { finalizers: [...(cr.metadata.finalizers ?? []), FINALIZER], resourceVersion: cr.metadata.resourceVersion } },
        false,
      );
    }

    const generation = cr.metadata.generation ?? 0;
    const status = (cr.status ?? {}) as { phase?: Phase; conditions?: Condition[]; jobName?: string; reason?: string };
    const admission = admit(cr);
    if (!admission.accepted) {
      return this.writeStatus(
        cr,
        status,
        { phase: 'Failed', reason: 'InvalidSpec', message: admission.condition.message, attempts: 0 },
        admission.condition,
      );
    }
    const accepted = admission.condition;
    const failedCondition = status.conditions?.find((c) => c.type === 'Failed');
    // A failed job stays failed, a succeeded one stays succeeded: no new Job, whatever happens
    // to the old one (TTL, manual delete). Only an invalid spec that was since fixed moves on.
    if (status.phase && TERMINAL.includes(status.phase) && !(failedCondition?.reason === 'InvalidSpec' && !status.jobName)) {
      return {};
    }

    let job = await this.getJob(namespace, jn);
    let obs: Observation;
    if (!job) {
      if (status.jobName) {
        obs = {
          phase: 'Failed',
          reason: 'JobDeleted',
          message: `Job ${status.jobName} was deleted before its outcome was recorded`,
          attempts: 0,
        };
        return this.writeStatus(cr, status, obs, accepted);
      }
      const wait = await this.mustWait(cr);
      if (wait) return { ...(await this.writeStatus(cr, status, wait.obs, accepted, wait.extra)), requeueAfterMs: wait.requeueMs };
      cr = await this.recordInRegistry(cr, log);
      job = await this.createJob(cr, jn, log);
    } else if ((job.spec?.suspend ?? false) !== (cr.spec.suspend === true)) {
      // Kueue (or a user) toggled spec.suspend: the Job controller stops or starts the pod.
      this.count('patch');
      job = await this.d.batch.patchNamespacedJob(
        { namespace, name: jn, body: { spec: { suspend: cr.spec.suspend === true } } },
        mergePatch,
      );
      log.info({ suspend: cr.spec.suspend === true }, 'job suspend updated');
    }
    obs = observeJob(job, await this.listPods(job), this.d.cfg.registryUrl);
    const progress = obs.phase === 'Running' ? await this.readProgress(cr, log) : undefined;
    const inputs: Condition | undefined =
      kind === 'AdapterMerge'
        ? { type: 'InputsResolved', status: 'True', reason: 'InputsAvailable', message: INPUTS_AVAILABLE, observedGeneration: generation }
        : undefined;
    const result = await this.writeStatus(cr, { ...status, jobName: jn }, obs, accepted, inputs, generation, progress);
    if (obs.phase === 'Running' && registryJobId(cr.metadata.annotations)) return { requeueAfterMs: this.d.cfg.progressSeconds * 1000 };
    return obs.phase === 'Running' || obs.phase === 'Pending' ? { ...result, requeueAfterMs: 30_000 } : result;
  }

  /** Gives the resource a registry job record (for progress and the version's job link) unless it has one. */
  private async recordInRegistry(cr: Resource, log: Logger): Promise<Resource> {
    if (!this.d.cfg.operatorToken || registryJobId(cr.metadata.annotations)) return cr;
    const made = await createRegistryJob(this.d.cfg.registryUrl, this.d.cfg.operatorToken, cr);
    if (!made.id) {
      log.warn({ error: made.error }, 'no registry job record: progress will not show in status');
      return cr;
    }
    log.info({ registryJob: made.id }, 'registry job recorded');
    return this.patchResource(
      cr,
      { metadata: { annotations: { [REGISTRY_JOB_ANNOTATION]: made.id }, resourceVersion: cr.metadata.resourceVersion } },
      false,
    );
  }

  private async readProgress(cr: Resource, log: Logger): Promise<Progress | undefined> {
    const id = registryJobId(cr.metadata.annotations);
    if (!id) return undefined;
    try {
      return await fetchProgress(this.d.cfg.registryUrl, this.d.cfg.operatorToken, id);
    } catch (err) {
      log.warn({ err, registryJob: id }, 'could not read progress from the registry');
      return undefined;
    }
  }

  /** Reasons not to create the Job yet: inputs still being produced, no registry token. */
  private async mustWait(cr: Resource): Promise<{ obs: Observation; extra?: Condition; requeueMs: number } | undefined> {
    let inputs: Condition | undefined;
    if (cr.kind === 'AdapterMerge') {
      const blockers = blockingProducers(cr, this.d.listResources());
      const generation = cr.metadata.generation;
      if (blockers.length > 0) {
        const message = `waiting for ${blockers.map((b) => `${b.kind}/${b.name} (${b.phase}) producing ${b.repository}`).join(', ')}`;
        return {
          obs: { phase: 'Pending', reason: 'WaitingForInputs', message, attempts: 0 },
          extra: { type: 'InputsResolved', status: 'False', reason: 'WaitingForInputs', message, observedGeneration: generation },
          requeueMs: 10_000,
        };
      }
      inputs = {
        type: 'InputsResolved',
        status: 'True',
        reason: 'InputsAvailable',
        message: 'no input is still being produced',
        observedGeneration: generation,
      };
    }
    const { tokenSecretName: secret, tokenSecretKey: k } = this.d.cfg;
    this.count('get');
    const found = await this.d.core.readNamespacedSecret({ namespace: cr.metadata.namespace, name: secret }).catch((err) => {
      if (code(err) === 404) return undefined;
      throw err;
    });
    if (!found?.data?.[k] && !found?.stringData?.[k]) {
      return {
        obs: {
          phase: 'Pending',
          reason: 'MissingRegistryToken',
          message: `create Secret "${secret}" with key "${k}" (a registry token with write access) in namespace "${cr.metadata.namespace}"`,
          attempts: 0,
        },
        ...(inputs ? { extra: inputs } : {}),
        requeueMs: 10_000,
      };
    }
    return undefined;
  }

  private async createJob(cr: Resource, jn: string, log: Logger): Promise<V1Job> {
    const ns = cr.metadata.namespace;
    try {
      this.count('create');
      await this.d.core.createNamespacedConfigMap({ namespace: ns, body: buildConfigMap(cr, jn) });
    } catch (err) {
      if (code(err) !== 409) throw err;
    }
    try {
      this.count('create');
      const job = await this.d.batch.createNamespacedJob({ namespace: ns, body: buildJob(cr, jn, this.d.cfg) });
      this.d.metrics.jobsCreated.inc({ kind: cr.kind });
      log.info('job created');
      await this.d.events.record(cr, 'Normal', 'JobCreated', `created Job ${jn}`);
      return job;
    } catch (err) {
      if (code(err) !== 409) throw err;
      const existing = await this.getJob(ns, jn); // created by an earlier reconcile that crashed before its status write
      if (!existing) throw err;
      return existing;
    }
  }

  private async listPods(job: V1Job): Promise<V1Pod[]> {
    const uid = job.metadata?.uid;
    if (!uid) return [];
    this.count('list');
    const list = await this.d.core.listNamespacedPod({
      namespace: job.metadata?.namespace ?? '',
      labelSelector: `batch.kubernetes.io/controller-uid=${uid}`,
    });
    return list.items;
  }

  private async writeStatus(
    cr: Resource,
    prev: { phase?: Phase; conditions?: Condition[]; jobName?: string },
    obs: Observation,
    accepted: Condition,
    extra?: Condition,
    generation = cr.metadata.generation ?? 0,
    progress?: Progress,
  ): Promise<ReconcileResult> {
    const now = new Date().toISOString();
    const c = (type: string, on: boolean, reason: string, message: string): Condition => ({
      type,
      status: on ? 'True' : 'False',
      reason,
      message,
      observedGeneration: generation,
    });
    const p = obs.phase;
    let conditions = (prev.conditions ?? []).slice();
    for (const next of [
      accepted,
      c(
        'Running',
        p === 'Running',
        p === 'Running' ? obs.reason : p === 'Pending' || p === 'Suspended' ? obs.reason : 'Finished',
        obs.message,
      ),
      c('Succeeded', p === 'Succeeded', p === 'Succeeded' ? 'Completed' : 'NotSucceeded', p === 'Succeeded' ? obs.message : `phase ${p}`),
      c('Failed', p === 'Failed', p === 'Failed' ? obs.reason : 'NotFailed', p === 'Failed' ? obs.message : `phase ${p}`),
      c(
        'Suspended',
        p === 'Suspended',
        p === 'Suspended' ? 'Suspended' : 'NotSuspended',
        p === 'Suspended' ? obs.message : 'spec.suspend is false',
      ),
      ...(extra ? [extra] : []),
    ]) {
      conditions = setCondition(conditions, next, now);
    }
    const current = (cr.status ?? {}) as Record<string, unknown>;
    const next: Record<string, unknown> = {
      phase: p,
      observedGeneration: generation,
      conditions,
      message: obs.message,
      attempts: obs.attempts,
      ...(prev.jobName ? { jobName: prev.jobName } : {}),
      ...(obs.startTime ? { startTime: obs.startTime } : current.startTime ? { startTime: current.startTime } : {}),
      ...(obs.completionTime ? { completionTime: obs.completionTime } : {}),
      ...(obs.outputVersion ? { outputVersion: obs.outputVersion } : {}),
      ...(progress ? { progress } : current.progress ? { progress: current.progress } : {}),
      progressText: p === 'Succeeded' ? '100%' : p === 'Running' ? progressText(progress ?? current.progress) : p.toLowerCase(),
    };
    const changed = Object.entries(next).some(([k, v]) => JSON.stringify(v) !== JSON.stringify(current[k]));
    if (!changed) return {};
    await this.patchResource(cr, { status: next }, true);
    if (prev.phase !== p) {
      this.d.metrics.transitions.inc({ kind: cr.kind, phase: p });
      this.d.log.info(
        { resource: `${cr.kind}/${cr.metadata.namespace}/${cr.metadata.name}`, from: prev.phase, to: p, reason: obs.reason },
        'phase changed',
      );
      await this.d.events.record(cr, p === 'Failed' ? 'Warning' : 'Normal', p === 'Failed' ? obs.reason : p, obs.message);
    }
    return {};
  }

  /**
   * The resource is being deleted: delete its Job in the foreground (the Job stays until
   * its pods are gone) and drop the finalizer only when the Job is gone, so a deleted
   * resource never leaves a running pod behind.
   */
  private async finalize(cr: Resource, jn: string, log: Logger): Promise<ReconcileResult> {
    if (!cr.metadata.finalizers?.includes(FINALIZER)) return {};
    const job = await this.getJob(cr.metadata.namespace, jn);
    if (job) {
      if (!job.metadata?.deletionTimestamp) {
        this.count('delete');
        await this.d.batch
          .deleteNamespacedJob({ namespace: cr.metadata.namespace, name: jn, propagationPolicy: 'Foreground' })
          .catch((err) => {
            if (code(err) !== 404) throw err;
          });
        log.info('resource deleted: deleting its Job and pods');
        await this.d.events.record(cr, 'Normal', 'Cancelling', `deleting Job ${jn} and its pods`);
      }
      return { requeueAfterMs: 1000 };
    }
    await this.patchResource(
      cr,
      {
        metadata: {
          finalizers: (cr.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
          resourceVersion: cr.metadata.resourceVersion,
        },
      },
      false,
    );
    log.info('finalizer removed');
    return {};
  }
}
