/** What every job runner gets and returns. */
import type { RegistryClient } from '@lowrank/registry-api/cli/client';
import type { Reporter } from './reporter.ts';

export interface RunContext {
  client: RegistryClient | undefined;
  reporter: Reporter;
  /** Scratch space for inputs and outputs; a retry reuses what is verified there. */
  workDir: string;
  jobId: string | undefined;
}

/** A directory ready to publish, and how to describe it. */
export interface JobOutcome {
  dir: string;
  baseModel: string;
  method: string;
  methodMetadata: Record<string, unknown>;
  metrics: Record<string, unknown>;
  lineage: { relation: string; parent?: string; parentRef?: string; weight?: number; parameters?: Record<string, unknown> }[];
}
