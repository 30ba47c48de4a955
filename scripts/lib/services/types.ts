/** The contract each local service (postgres, redis, minio) implements. */
export class ServiceError extends Error {}

export interface ServiceState {
  pid: number;
  port: number;
  url: string;
  /** Variables written to services.env, e.g. DATABASE_URL. */
  env: Record<string, string>;
  /** Service-specific extras kept across restarts (credentials, data dir). */
  extra?: Record<string, string>;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

export interface ServiceContext {
  /** This service's own directory under the state dir. */
  dir: string;
  cacheDir: string;
  log(message: string): void;
  secret(): string;
  run(cmd: string, args: string[], options?: { env?: NodeJS.ProcessEnv; cwd?: string }): RunResult;
}

export interface Service {
  /** Installs or builds the server when missing; fast when present. */
  install(ctx: ServiceContext): Promise<void>;
  /** Starts it (reusing the previous port and credentials when possible) and waits until ready. */
  start(ctx: ServiceContext, previous: ServiceState | undefined): Promise<ServiceState>;
  alive(ctx: ServiceContext, state: ServiceState): Promise<boolean>;
  stop(ctx: ServiceContext, state: ServiceState): Promise<void>;
}
