/**
 * The operator's configuration, from the environment (the Helm chart sets it), checked at
 * startup with errors that name the variable to fix.
 */
export interface OperatorConfig {
  /** Image of the worker pods. */
  workerImage: string;
  /** Worker command; `--spec <file>` is appended. */
  workerCommand: string[];
  /** Working directory of the worker container (where the command's relative paths resolve). */
  workerWorkdir: string;
  /** Extra env for every worker container (JSON object), e.g. a proxy setting. */
  workerEnv: Record<string, string>;
  /** Registry URL handed to the worker as LOWRANK_REGISTRY_URL. */
  registryUrl: string;
  /** The operator's own registry token (read access to job records), for progress. */
  operatorToken: string;
  /** How often a running job's progress is read from the registry. */
  progressSeconds: number;
  /** Secret (in the custom resource's namespace) holding the registry token under `tokenSecretKey`. */
  tokenSecretName: string;
  tokenSecretKey: string;
  /** Secret (in the custom resource's namespace) holding the Trans-LoRA seed key (LOWRANK_SEED_KEY) under `seedKeySecretKey`. */
  seedKeySecretName: string;
  seedKeySecretKey: string;
  /** ServiceAccount of worker pods; empty: the namespace default. */
  workerServiceAccount: string;
  /** Node selector and tolerations added to pods that request GPUs (a GPU node pool). */
  gpuNodeSelector: Record<string, string>;
  gpuTolerations: { key?: string; operator?: string; value?: string; effect?: string }[];
  /** Node label that spec.resources.gpu.type selects on. */
  gpuProductLabel: string;
  defaultCpu: string;
  defaultMemory: string;
  /** Only this namespace; empty: all namespaces. */
  watchNamespace: string;
  /** Leader election Lease. */
  leaseName: string;
  leaseNamespace: string;
  leaseDurationSeconds: number;
  identity: string;
  httpPort: number;
  httpHost: string;
  /** Full resync period (level-based safety net on top of watches). */
  resyncSeconds: number;
  concurrency: number;
}

export class ConfigError extends Error {}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  return n;
}

function json<T>(env: NodeJS.ProcessEnv, name: string, fallback: T, check: (v: unknown) => boolean, what: string): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new ConfigError(`${name} must be JSON (${what}), got "${raw}"`);
  }
  if (!check(v)) throw new ConfigError(`${name} must be ${what}, got ${raw}`);
  return v as T;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const registryUrl = env.LOWRANK_REGISTRY_URL ?? '';
  if (!registryUrl) throw new ConfigError('LOWRANK_REGISTRY_URL is not set: the URL of the registry the worker pushes to');
  try {
    new URL(registryUrl);
  } catch {
    throw new ConfigError(`LOWRANK_REGISTRY_URL is not a URL: "${registryUrl}"`);
  }
  return {
    workerImage: env.LOWRANK_WORKER_IMAGE || 'ghcr.io/lowrank/worker:0.1.0',
    workerCommand: json(
      env,
      'LOWRANK_WORKER_COMMAND',
      ['node', 'worker/src/cli.ts', 'run'],
      (v) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string'),
      'a non-empty array of strings, e.g. ["node","worker/src/cli.ts","run"]',
    ),
    workerWorkdir: env.LOWRANK_WORKER_WORKDIR || '/app',
    workerEnv: json(
      env,
      'LOWRANK_WORKER_ENV',
      {},
      (v) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string'),
      'an object of string values',
    ),
    registryUrl,
    operatorToken: env.LOWRANK_OPERATOR_TOKEN ?? '',
    progressSeconds: int(env, 'LOWRANK_PROGRESS_SECONDS', 10, 1, 3600),
    tokenSecretName: env.LOWRANK_TOKEN_SECRET || 'lowrank-registry-token',
    tokenSecretKey: env.LOWRANK_TOKEN_SECRET_KEY || 'token',
    seedKeySecretName: env.LOWRANK_SEED_KEY_SECRET || 'lowrank-seed-key',
    seedKeySecretKey: env.LOWRANK_SEED_KEY_SECRET_KEY || 'key',
    workerServiceAccount: env.LOWRANK_WORKER_SERVICE_ACCOUNT ?? '',
    gpuNodeSelector: json(
      env,
      'LOWRANK_GPU_NODE_SELECTOR',
      {},
      (v) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string'),
      'an object of string values, e.g. {"cloud.example.com/pool":"gpu"}',
    ),
    gpuTolerations: json(
      env,
      'LOWRANK_GPU_TOLERATIONS',
      [],
      (v) => Array.isArray(v) && v.every((x) => typeof x === 'object' && x !== null),
      'an array of tolerations, e.g. [{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}]',
    ),
    gpuProductLabel: env.LOWRANK_GPU_PRODUCT_LABEL || 'nvidia.com/gpu.product',
    defaultCpu: env.LOWRANK_DEFAULT_CPU || '2',
    defaultMemory: env.LOWRANK_DEFAULT_MEMORY || '8Gi',
    watchNamespace: env.LOWRANK_WATCH_NAMESPACE ?? '',
    leaseName: env.LOWRANK_LEASE_NAME || 'lowrank-operator',
    leaseNamespace: env.LOWRANK_LEASE_NAMESPACE || env.POD_NAMESPACE || 'default',
    leaseDurationSeconds: int(env, 'LOWRANK_LEASE_DURATION_SECONDS', 15, 2, 300),
    identity: env.POD_NAME || `${env.HOSTNAME ?? 'operator'}-${process.pid}`,
    httpPort: int(env, 'LOWRANK_HTTP_PORT', 8080, 0, 65535),
    httpHost: env.LOWRANK_HTTP_HOST || '0.0.0.0',
    resyncSeconds: int(env, 'LOWRANK_RESYNC_SECONDS', 60, 1, 86400),
    concurrency: int(env, 'LOWRANK_CONCURRENCY', 4, 1, 64),
  };
}
