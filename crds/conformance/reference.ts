/**
 * The apiserver reference validator (crdcheck, this folder's Go program built on
 * k8s.io/apiextensions-apiserver) as a library for tests: builds it once from the Go
 * module proxy into $LOWRANK_CACHE/bin, keyed by its sources, and runs it over cases.
 * `node crds/conformance/reference.ts` builds it and prints the binary's path.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

const here = import.meta.dirname;
const sources = ['go.mod', 'go.sum', 'main.go'];

export interface ReferenceCase {
  object: unknown;
  old?: unknown;
}

export interface FieldError {
  path: string;
  message: string;
}

export function referenceBinary(): string {
  const hash = createHash('sha256');
  for (const f of sources) hash.update(readFileSync(join(here, f)));
  const cache = process.env.LOWRANK_CACHE ?? join(homedir(), '.cache', 'lowrank');
  const bin = join(cache, 'bin', `crdcheck-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(bin)) return bin;
  mkdirSync(join(cache, 'bin'), { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  const go = ['go', '/usr/local/go/bin/go'].find((g) => spawnSync(g, ['version']).status === 0);
  if (!go) throw new Error('Go >= 1.24 is needed to build the apiserver reference validator (crds/conformance); install Go and run again');
  const r = spawnSync(go, ['build', '-trimpath', '-o', tmp, '.'], {
    cwd: here,
    encoding: 'utf8',
    env: { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod' },
  });
  if (r.status !== 0) throw new Error(`building crds/conformance failed:\n${r.stderr.slice(-3000)}`);
  renameSync(tmp, bin);
  return bin;
}

/** Runs the apiserver's validation over the cases; CRD-level errors come back too. */
export function referenceValidate(
  crdDir: string,
  cases: ReferenceCase[],
): { crdErrors: Record<string, string[]>; results: FieldError[][] } {
  const r = spawnSync(referenceBinary(), [crdDir], { input: JSON.stringify(cases), encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`crdcheck failed (exit ${r.status}): ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { crdErrors: Record<string, string[]>; results: FieldError[][] };
  // The apiserver's root path prints as <nil>; the platform writes it as "".
  for (const list of out.results) for (const e of list) if (e.path === '<nil>') e.path = '';
  return out;
}

if (import.meta.main) console.log(referenceBinary());
