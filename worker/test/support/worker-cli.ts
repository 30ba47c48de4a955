/** Runs `lora-worker run` as a child process against a registry, as the executor and operator do. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const CLI = join(import.meta.dirname, '..', '..', 'src', 'cli.ts');

export interface WorkerRun {
  code: number;
  stdout: string;
  stderr: string;
  /** LOWRANK_RESULT_FILE's content, when the worker wrote one. */
  result: any;
}

export async function runWorker(
  spec: unknown,
  o: { registry: string; token: string; tmp: string; workDir?: string; env?: Record<string, string> },
): Promise<WorkerRun> {
  const dir = mkdtempSync(join(o.tmp, 'job-'));
  const specFile = join(dir, 'spec.json');
  const resultFile = join(dir, 'result.json');
  writeFileSync(specFile, JSON.stringify(spec));
  const res = await promisify(execFile)(process.execPath, [CLI, 'run', '--spec', specFile, '--work-dir', o.workDir ?? join(dir, 'work')], {
    env: { ...process.env, LOWRANK_REGISTRY_URL: o.registry, LOWRANK_TOKEN: o.token, LOWRANK_RESULT_FILE: resultFile, ...o.env },
    maxBuffer: 1 << 26,
  }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
  let result: unknown;
  try {
    result = JSON.parse(readFileSync(resultFile, 'utf8'));
  } catch {}
  return { ...res, result };
}
