/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * take the Lease when it is free or expired (renewTime + leaseDuration in the past), renew
 * it every leaseDuration/3, and write with the Lease's resourceVersion so two replicas can
 * never both win (the loser gets 409 Conflict). On shutdown the holder releases the Lease
 * so a standby takes over at once. Losing it is fatal to the holder: the process exits
 * and restarts as a standby rather than reconcile without the lock.
 */
import { type CoordinationV1Api, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import type { Logger } from '@lowrank/crds';

export interface LeaderOptions {
  api: CoordinationV1Api;
  name: string;
  namespace: string;
  identity: string;
  leaseDurationSeconds: number;
  log: Logger;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

const code = (err: unknown) => (err as { code?: number }).code;

export class LeaderElector {
  private readonly o: LeaderOptions;
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(o: LeaderOptions) {
    this.o = o;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The lease update in flight, so release() never races a renewal. */
  private inflight: Promise<void> | undefined;

  start(): void {
    this.run();
  }

  private run(): void {
    this.inflight = this.tick().finally(() => {
      this.inflight = undefined;
    });
  }

  private schedule(): void {
    if (this.stopped) return;
    const period = this.leading ? (this.o.leaseDurationSeconds * 1000) / 3 : 1000;
    this.timer = setTimeout(() => this.run(), period);
  }

  private async tick(): Promise<void> {
    try {
      const ok = await this.tryAcquireOrRenew();
      if (this.stopped) return; // shutting down: release() decides what happens to the lease
      if (ok && !this.leading) {
        this.leading = true;
        this.o.log.info({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity }, 'became leader');
        this.o.onStartedLeading();
      } else if (!ok && this.leading) this.lose('lease taken by another holder');
    } catch (err) {
      this.o.log.warn({ err }, 'lease update failed');
      if (this.leading && Date.now() - this.lastRenew > this.o.leaseDurationSeconds * 1000) this.lose('could not renew the lease in time');
    }
    this.schedule();
  }

  private lastRenew = 0;

  private lose(why: string): void {
    this.leading = false;
    this.o.log.error({ why }, 'lost leadership');
    this.o.onStoppedLeading();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { api, name, namespace, identity, leaseDurationSeconds } = this.o;
    const now = new V1MicroTime();
    let lease: V1Lease;
    try {
      lease = await api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (code(err) !== 404) throw err;
      try {
        await api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
          },
        });
        this.lastRenew = Date.now();
        return true;
      } catch (e) {
        if (code(e) === 409) return false;
        throw e;
      }
    }
    const spec = lease.spec ?? {};
    const renew = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const expired = renew + (spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000 < Date.now();
    const mine = spec.holderIdentity === identity;
    if (!mine && spec.holderIdentity && !expired) return false;
    lease.spec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds,
      renewTime: now,
      ...(mine ? {} : { acquireTime: now, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
    };
    try {
      await api.replaceNamespacedLease({ name, namespace, body: lease }); // resourceVersion inside: compare-and-swap
      this.lastRenew = Date.now();
      return true;
    } catch (err) {
      if (code(err) === 409) return false;
      throw err;
    }
  }

  /** Stops renewing and, if leading, hands the Lease back (holder cleared, expiring at once). */
  async release(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.inflight;
    if (!this.leading) return;
    this.leading = false;
    const { api, name, namespace, identity } = this.o;
    try {
      const lease = await api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== identity) return;
      lease.spec = { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: new V1MicroTime() };
      await api.replaceNamespacedLease({ name, namespace, body: lease });
      this.o.log.info('lease released');
    } catch (err) {
      this.o.log.warn({ err }, 'could not release the lease');
    }
  }
}
