/**
 * `lora-worker run`: one job from its validated spec to a registry version. The exit
 * status tells the executor or the operator what to do next (EXIT): bad input is never
 * retried, an unreachable registry is. The outcome is also written as JSON to
 * LOWRANK_RESULT_FILE when set (the pod's terminationMessagePath), so whoever runs the
 * worker reads it without parsing logs.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JobResource } from '@lowrank/crds';
import { asLowrankError, LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted, AdapterMergeSpecDefaulted, CompressionJobSpecDefaulted } from '@lowrank/crds/types';
import { RegistryClient } from '@lowrank/registry-api/cli/client';
import { EXIT } from '../exit-codes.ts';
import { runGenerate } from '../generate/generate-job.ts';
import { runTrainGenerator } from '../generate/train-generator-job.ts';
import { runTransfer } from '../transfer/transfer-job.ts';
import { runCompress } from './compress-job.ts';
import { computeRecord } from './compute-record.ts';
import { runMerge } from './merge-job.ts';
import { publish, type VersionRef } from './output.ts';
import { Reporter } from './reporter.ts';
import { runTrain } from './train-job.ts';
import type { JobOutcome, RunContext } from './types.ts';

export interface RunOptions {
  registryUrl?: string | undefined;
  token?: string | undefined;
  jobId?: string | undefined;
  resultFile?: string | undefined;
  workDir?: string | undefined;
}

export type RunResult =
  | { status: 'succeeded'; output: VersionRef; exitCode: 0 }
  | { status: 'failed'; reason: string; message: string; exitCode: number };

const BAD_INPUT = new Set([
  'invalid_spec',
  'invalid_file',
  'invalid_request',
  'not_found',
  'forbidden',
  'unauthorized',
  'conflict',
  'payload_too_large',
]);

async function execute(resource: JobResource, ctx: RunContext): Promise<JobOutcome> {
  switch (resource.kind) {
    case 'AdapterMerge':
      return runMerge(resource.spec as unknown as AdapterMergeSpecDefaulted, ctx);
    case 'CompressionJob':
      return runCompress(resource.spec as unknown as CompressionJobSpecDefaulted, ctx);
    case 'AdapterJob': {
      const spec = resource.spec as unknown as AdapterJobSpecDefaulted;
      if (spec.mode === 'generate') return runGenerate(spec, ctx);
      if (spec.mode === 'train-generator') return runTrainGenerator(spec, ctx);
      if (spec.mode === 'transfer') return runTransfer(spec, ctx);
      return runTrain(spec, ctx);
    }
    default:
      throw new LowrankError('invalid_spec', `kind ${(resource as { kind: string }).kind} is not run by this worker`);
  }
}

export async function runJob(resource: JobResource, options: RunOptions): Promise<RunResult> {
  const client = options.registryUrl ? new RegistryClient({ registry: options.registryUrl, token: options.token }) : undefined;
  const reporter = Reporter.create(options.jobId, client);
  const workDir = options.workDir ?? join(tmpdir(), `lowrank-worker-${options.jobId ?? resource.metadata?.name ?? process.pid}`);
  const ctx: RunContext = { client, reporter, workDir, jobId: options.jobId };
  let result: RunResult;
  try {
    mkdirSync(workDir, { recursive: true });
    if (!client)
      throw new LowrankError('invalid_request', 'no registry: set LOWRANK_REGISTRY_URL (and LOWRANK_TOKEN) so the result can be stored');
    await reporter.start(resource.kind, resource.metadata?.name ?? '');
    const outcome = await execute(resource, ctx);
    await reporter.progress({ stage: 'uploading', step: 0, total: 1 }, true);
    const spec = resource.spec as { output: Parameters<typeof publish>[2] };
    const output = await publish(client, outcome.dir, spec.output, outcome.baseModel, {
      method: outcome.method,
      methodMetadata: { ...outcome.methodMetadata, compute: computeRecord() },
      metrics: outcome.metrics,
      lineage: outcome.lineage,
      ...(options.jobId ? { jobId: options.jobId } : {}),
    });
    await reporter.succeeded({ ...output });
    result = { status: 'succeeded', output, exitCode: EXIT.ok };
  } catch (err) {
    const e = asLowrankError(err);
    const exitCode = BAD_INPUT.has(e.code)
      ? EXIT.badInput
      : e.code === 'unavailable' || e.code === 'rate_limited'
        ? EXIT.retryable
        : EXIT.internal;
    const message = e.toText();
    if (exitCode === EXIT.badInput) await reporter.failed(message);
    else reporter.log.error({ event: 'attempt-failed', code: e.code, retryable: true }, message);
    result = { status: 'failed', reason: e.code, message, exitCode };
  }
  if (options.resultFile) writeResult(options.resultFile, result);
  return result;
}

/** The outcome as JSON for whoever runs the worker (executor, pod termination message). */
export function writeResult(path: string, result: RunResult): void {
  const { exitCode: _, ...written } = result;
  writeFileSync(path, `${JSON.stringify(written)}\n`);
}
