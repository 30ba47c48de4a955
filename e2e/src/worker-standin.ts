#!/usr/bin/env node
/**
 * STAND-IN for `node worker/src/cli.ts run --spec <file>` until `lora-worker run` lands:
 * honours the same contract (see docs/operator.md) so the operator's e2e tests exercise it.
 * It does no training: it reads the spec, reports one progress step per second of its
 * sleep to the registry when LOWRANK_JOB_ID is set, and writes the result file.
 *
 *   worker-standin.ts run --spec <file>
 *   env: LOWRANK_REGISTRY_URL, LOWRANK_TOKEN, [LOWRANK_JOB_ID], [LOWRANK_RESULT_FILE]
 *   exit: 0 success, 64 usage, 65 bad input, 75 retryable, 70 internal
 *
 * Test knobs, as annotations on the custom resource (the spec file carries its metadata):
 *   standin.lowrank.dev/sleep-seconds   run this long before finishing (deletion tests)
 *   standin.lowrank.dev/exit-code       finish with this exit code (65, 75, 70...)
 *   standin.lowrank.dev/reason          the failure reason written to the result file
 *   standin.lowrank.dev/version         the version number to report (default 1)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse } from 'yaml';

interface Resource {
  kind?: string;
  metadata?: { name?: string; annotations?: Record<string, string> };
  spec?: { output?: { repository?: string } };
}

function result(body: unknown): void {
  const file = process.env.LOWRANK_RESULT_FILE;
  if (file) writeFileSync(file, JSON.stringify(body));
}

function fail(code: number, reason: string, message: string): never {
  result({ status: 'failed', reason, message });
  process.stderr.write(`worker-standin: ${reason}: ${message}\n`);
  process.exit(code);
}

const { positionals, values } = (() => {
  try {
    return parseArgs({ options: { spec: { type: 'string' } }, allowPositionals: true, strict: true });
  } catch (err) {
    return fail(64, 'Usage', (err as Error).message);
  }
})();
if (positionals[0] !== 'run' || !values.spec) fail(64, 'Usage', 'usage: worker-standin.ts run --spec <file>');

let resource: Resource;
try {
  resource = parse(readFileSync(values.spec, 'utf8')) as Resource;
} catch (err) {
  fail(65, 'BadSpecFile', `cannot read ${values.spec}: ${(err as Error).message}`);
}
const repository = resource.spec?.output?.repository;
if (!resource.kind || !repository) fail(65, 'InvalidSpec', 'the spec file needs kind and spec.output.repository');
if (!process.env.LOWRANK_REGISTRY_URL) fail(64, 'Usage', 'LOWRANK_REGISTRY_URL is not set');

const notes = resource.metadata?.annotations ?? {};
const sleepSeconds = Number(notes['standin.lowrank.dev/sleep-seconds'] ?? '0');
const exitCode = Number(notes['standin.lowrank.dev/exit-code'] ?? '0');
console.log(JSON.stringify({ msg: 'stand-in worker started', kind: resource.kind, name: resource.metadata?.name, sleepSeconds }));

let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
  console.log(JSON.stringify({ msg: 'SIGTERM: stopping' }));
  fail(75, 'Terminated', 'stopped by SIGTERM');
});

/** The contract's progress channel: POST /v1/jobs/{id}/progress when LOWRANK_JOB_ID is set. */
async function report(body: unknown): Promise<void> {
  const id = process.env.LOWRANK_JOB_ID;
  if (!id) return;
  const res = await fetch(`${process.env.LOWRANK_REGISTRY_URL}/v1/jobs/${id}/progress`, {
    method: 'POST',
    headers: { authorization: `Bearer ${process.env.LOWRANK_TOKEN ?? ''}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) console.log(JSON.stringify({ msg: 'progress report refused', status: res.status, body: await res.text() }));
}

const steps = Math.max(1, Math.ceil(sleepSeconds));
for (let step = 1; step <= steps && !stopping; step++) {
  if (sleepSeconds > 0) await new Promise((r) => setTimeout(r, (sleepSeconds * 1000) / steps));
  console.log(JSON.stringify({ msg: 'step', step, totalSteps: steps }));
  await report({ status: 'running', progress: { step, totalSteps: steps, loss: Number((2 / step).toFixed(4)) } });
}

if (exitCode !== 0) {
  fail(exitCode, notes['standin.lowrank.dev/reason'] ?? 'StandInFailure', `stand-in asked to exit ${exitCode}`);
}
const version = `v${notes['standin.lowrank.dev/version'] ?? '1'}`;
await report({ status: 'succeeded' });
result({ status: 'succeeded', output: { repository, version, ref: `${repository}@${version}` } });
console.log(JSON.stringify({ msg: 'done', ref: `${repository}@${version}` }));
