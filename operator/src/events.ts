/**
 * Kubernetes Events on the custom resource (core/v1, what `kubectl describe` lists). The
 * reconciler emits one per phase transition, so a replayed reconcile does not repeat them.
 */
import type { CoreV1Api } from '@kubernetes/client-node';
import type { Logger } from '@lowrank/crds';
import type { Resource } from './job-spec.ts';
import { API_VERSION, MANAGED_BY } from './kinds.ts';

export class EventRecorder {
  private readonly core: CoreV1Api;
  private readonly identity: string;
  private readonly log: Logger;

  constructor(core: CoreV1Api, identity: string, log: Logger) {
    this.core = core;
    this.identity = identity;
    this.log = log;
  }

  async record(cr: Resource, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date();
    try {
      await this.core.createNamespacedEvent({
        namespace: cr.metadata.namespace,
        body: {
          metadata: {
            name: `${cr.metadata.name}.${now.getTime().toString(16)}${Math.floor(Math.random() * 4096).toString(16)}`,
            namespace: cr.metadata.namespace,
          },
          involvedObject: {
            apiVersion: API_VERSION,
            kind: cr.kind,
            name: cr.metadata.name,
            namespace: cr.metadata.namespace,
            uid: cr.metadata.uid,
            resourceVersion: cr.metadata.resourceVersion,
          },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: MANAGED_BY },
          reportingComponent: MANAGED_BY,
          reportingInstance: this.identity,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (err) {
      // An event is a courtesy: never fail a reconcile over it.
      this.log.warn({ err, reason }, 'could not record event');
    }
  }
}
