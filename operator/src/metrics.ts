/** The operator's Prometheus metrics (prom-client), on /metrics. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'lowrank_operator_' });
  return {
    registry,
    reconciles: new Counter({
      name: 'lowrank_operator_reconcile_total',
      help: 'Reconciles by kind and result (ok, requeue, error).',
      labelNames: ['kind', 'result'] as const,
      registers: [registry],
    }),
    reconcileSeconds: new Histogram({
      name: 'lowrank_operator_reconcile_duration_seconds',
      help: 'Time per reconcile.',
      labelNames: ['kind'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    jobsCreated: new Counter({
      name: 'lowrank_operator_jobs_created_total',
      help: 'batch/v1 Jobs created, by kind.',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    transitions: new Counter({
      name: 'lowrank_operator_phase_transitions_total',
      help: 'Custom resource phase transitions, by kind and new phase.',
      labelNames: ['kind', 'phase'] as const,
      registers: [registry],
    }),
    apiRequests: new Counter({
      name: 'lowrank_operator_apiserver_requests_total',
      help: 'Requests the reconcilers sent to the apiserver, by verb.',
      labelNames: ['verb'] as const,
      registers: [registry],
    }),
    queueDepth: new Gauge({ name: 'lowrank_operator_queue_depth', help: 'Keys waiting in the work queue.', registers: [registry] }),
    leader: new Gauge({ name: 'lowrank_operator_leader', help: '1 while this replica holds the leader Lease.', registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
