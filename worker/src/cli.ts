#!/usr/bin/env node
/**
 * lora-worker: runs one job from its spec.
 *   lora-worker validate --spec <file> [--output yaml|json]
 *   lora-worker run --spec <file> [--registry URL] [--work-dir DIR] [--result-file FILE]
 *   lora-worker executor [--concurrency N] [--logs-dir DIR]
 */
import { parseArgs } from 'node:util';
import type { JobResource } from '@lowrank/crds';
import { asLowrankError, LowrankError } from '@lowrank/crds/errors';
import { createLogger } from '@lowrank/crds/log';
import { stringify } from 'yaml';
import { startExecutor } from './executor/executor.ts';
import { EXIT } from './exit-codes.ts';
import { backendInfo } from './native/backend.ts';
import { runJob, writeResult } from './run/run.ts';
import { readSpecFile } from './spec-file.ts';

const USAGE = `usage: lora-worker <command> [options]

  validate --spec <file> [--output yaml|json]
             check a job spec (YAML or JSON: an AdapterJob, AdapterMerge or
             CompressionJob resource, or {kind, spec}) and print it with defaults
  run --spec <file> [--registry URL] [--work-dir DIR] [--result-file FILE]
             run the job (AdapterJob modes train, train-generator, generate;
             AdapterMerge, CompressionJob) and push its result to the registry
             as a new version; a training job
             checkpoints into the work dir and resumes from it when run again;
             env: LOWRANK_REGISTRY_URL, LOWRANK_TOKEN, LOWRANK_JOB_ID (the registry
             job to report progress to), LOWRANK_RESULT_FILE, LOWRANK_WORK_DIR,
             LOWRANK_BACKEND (cpu | cuda | auto, default auto: CUDA when a GPU is usable)
  executor [--concurrency N] [--logs-dir DIR]
             the local executor: takes jobs submitted to the registry (POST /v1/jobs)
             from its Redis queue and runs each as a 'lora-worker run' child process;
             env: LOWRANK_REDIS_URL, LOWRANK_REGISTRY_URL, LOWRANK_TOKEN

exit status: 0 ok, 64 usage error, 65 invalid spec or input (do not retry),
             75 transient failure (retry), 70 internal error`;

function fail(code: number, message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

function args<T extends Record<string, { type: 'string'; default?: string }>>(command: string, rest: string[], options: T) {
  try {
    return parseArgs({ args: rest, options, strict: true }).values as { [K in keyof T]?: string };
  } catch (err) {
    fail(EXIT.usage, `lora-worker ${command}: ${(err as Error).message}\n\n${USAGE}`);
  }
}

function readSpec(path: string, resultFile?: string): JobResource {
  try {
    return readSpecFile(path);
  } catch (err) {
    const e = asLowrankError(err);
    const badInput = e instanceof LowrankError && ['invalid_spec', 'invalid_file', 'invalid_request'].includes(e.code);
    const exitCode = badInput ? EXIT.badInput : EXIT.internal;
    if (resultFile) writeResult(resultFile, { status: 'failed', reason: e.code, message: `${path}: ${e.toText()}`, exitCode });
    fail(exitCode, `${path}: ${e.toText()}`);
  }
}

function validate(rest: string[]): void {
  const values = args('validate', rest, { spec: { type: 'string' }, output: { type: 'string', default: 'yaml' } });
  if (!values.spec) fail(EXIT.usage, `lora-worker validate: --spec <file> is required\n\n${USAGE}`);
  if (values.output !== 'yaml' && values.output !== 'json')
    fail(EXIT.usage, `lora-worker validate: --output must be yaml or json, got "${values.output}"`);
  const resource = readSpec(values.spec);
  process.stdout.write(values.output === 'json' ? `${JSON.stringify(resource, null, 2)}\n` : stringify(resource));
  process.stderr.write(`${values.spec}: valid ${resource.kind}\n`);
}

/**
 * The startup line naming the compute backend (cpu or cuda, the GPU, or why not). An
 * explicit LOWRANK_BACKEND=cuda without a usable GPU stops here: retryable, since another
 * node may have one.
 */
function logNativeBackend(resultFile: string | undefined): void {
  try {
    // `engine`: where a train job's steps run: the CUDA device engine with the CUDA backend (a job whose
    // adapter it lacks falls back to the CPU engine and logs `train_engine` saying why; docs/cuda.md).
    const info = backendInfo();
    createLogger('worker').info({ event: 'native_backend', ...info, engine: info.backend }, 'native backend');
  } catch (err) {
    const e = asLowrankError(err);
    const exitCode = e instanceof LowrankError && e.code === 'invalid_request' ? EXIT.usage : EXIT.retryable;
    if (resultFile) writeResult(resultFile, { status: 'failed', reason: e.code, message: e.toText(), exitCode });
    fail(exitCode, `lora-worker run: ${e.toText()}`);
  }
}

async function run(rest: string[]): Promise<void> {
  const values = args('run', rest, {
    spec: { type: 'string' },
    registry: { type: 'string' },
    'work-dir': { type: 'string' },
    'result-file': { type: 'string' },
  });
  if (!values.spec) fail(EXIT.usage, `lora-worker run: --spec <file> is required\n\n${USAGE}`);
  const env = process.env;
  const resultFile = values['result-file'] ?? env.LOWRANK_RESULT_FILE;
  const resource = readSpec(values.spec, resultFile);
  logNativeBackend(resultFile);
  const result = await runJob(resource, {
    registryUrl: values.registry ?? env.LOWRANK_REGISTRY_URL ?? env.LOWRANK_REGISTRY,
    token: env.LOWRANK_TOKEN,
    jobId: env.LOWRANK_JOB_ID || undefined,
    resultFile,
    workDir: values['work-dir'] ?? env.LOWRANK_WORK_DIR,
  });
  process.exitCode = result.exitCode;
}

async function executor(rest: string[]): Promise<void> {
  const values = args('executor', rest, { concurrency: { type: 'string', default: '1' }, 'logs-dir': { type: 'string' } });
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64)
    fail(EXIT.usage, `lora-worker executor: --concurrency must be an integer in [1, 64], got "${values.concurrency}"`);
  const env = process.env;
  for (const name of ['LOWRANK_REDIS_URL', 'LOWRANK_REGISTRY_URL', 'LOWRANK_TOKEN'] as const)
    if (!env[name]) fail(EXIT.usage, `lora-worker executor: set ${name}`);
  const ex = await startExecutor({
    redisUrl: env.LOWRANK_REDIS_URL as string,
    registryUrl: env.LOWRANK_REGISTRY_URL as string,
    token: env.LOWRANK_TOKEN as string,
    concurrency,
    ...(values['logs-dir'] ? { logsDir: values['logs-dir'] } : {}),
  });
  const stop = () => void ex.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    process.exit(command === undefined ? EXIT.usage : EXIT.ok);
  }
  if (command === 'validate') return validate(rest);
  if (command === 'run') return run(rest);
  if (command === 'executor') return executor(rest);
  fail(EXIT.usage, `lora-worker: unknown command "${command}"\n\n${USAGE}`);
}

await main(process.argv.slice(2));
