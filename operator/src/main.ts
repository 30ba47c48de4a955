#!/usr/bin/env node
/**
 * The lowrank operator: `node operator/src/main.ts`. Configuration from the environment
 * (config.ts); the kubeconfig from $KUBECONFIG or the in-cluster service account.
 * Serves /healthz, /readyz and /metrics at once; reconciles only while it holds the leader
 * Lease. SIGTERM/SIGINT: stop taking work, finish in-flight reconciles (10 s at most),
 * release the Lease, exit 0.
 */
import { CoordinationV1Api, KubeConfig } from '@kubernetes/client-node';
import { createLogger } from '@lowrank/crds';
import { ConfigError, loadConfig } from './config.ts';
import { Controller } from './controller.ts';
import { startHttp } from './http.ts';
import { LeaderElector } from './leader.ts';
import { createMetrics } from './metrics.ts';

const log = createLogger('operator');

async function main(): Promise<void> {
  let cfg: ReturnType<typeof loadConfig>;
  try {
    cfg = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      log.fatal(err.message);
      process.exit(64);
    }
    throw err;
  }
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const metrics = createMetrics();
  const controller = new Controller(kc, cfg, log, metrics);
  let leading = false;
  let shuttingDown = false;

  const shutdown = async (code: number, why: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ why }, 'shutting down');
    await controller.stop(10_000);
    await elector.release();
    server.close();
    log.info('stopped');
    process.exit(code);
  };

  const elector = new LeaderElector({
    api: kc.makeApiClient(CoordinationV1Api),
    name: cfg.leaseName,
    namespace: cfg.leaseNamespace,
    identity: cfg.identity,
    leaseDurationSeconds: cfg.leaseDurationSeconds,
    log,
    onStartedLeading: () => {
      leading = true;
      metrics.leader.set(1);
      controller.start().catch((err: unknown) => {
        log.error({ err }, 'controller failed to start');
        void shutdown(1, 'controller failed to start');
      });
    },
    // Never reconcile without the lock: exit and come back as a standby.
    onStoppedLeading: () => {
      metrics.leader.set(0);
      void shutdown(1, 'lost the leader lease');
    },
  });

  const server = await startHttp({
    host: cfg.httpHost,
    port: cfg.httpPort,
    registry: metrics.registry,
    ready: () => !shuttingDown && (!leading || controller.ready),
  });
  const addr = server.address();
  log.info(
    { identity: cfg.identity, http: typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : addr, worker: cfg.workerCommand },
    'operator started',
  );
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void shutdown(0, sig));
  elector.start();
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'operator crashed');
  process.exit(70);
});
