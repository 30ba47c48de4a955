/**
 * Exchange with the Python reference scripts in worker/test/python: tensors as raw
 * little-endian files plus JSON entries {file, shape, dtype} in one temp directory (the
 * format of f32io.py), and a runner that fails loudly when LOWRANK_PYTHON is unset.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Entry {
  file: string;
  shape: number[];
  dtype?: 'f32' | 'u8';
}

export const pythonDir = join(import.meta.dirname, '..', 'python');

/** The reference interpreter; tests that need it fail (never skip) without it. */
export function referencePython(): string {
  const py = process.env.LOWRANK_PYTHON;
  if (!py) {
    assert.fail(
      'LOWRANK_PYTHON is not set: run `source scripts/lib/node.sh; source scripts/lib/pyenv.sh; lowrank_ensure_pyenv` ' +
        'or the tests through `npm test` (scripts/test), which creates the PyTorch/PEFT venv',
    );
  }
  return py;
}

export function runPython(script: string, ...args: string[]): void {
  const r = spawnSync(referencePython(), [join(pythonDir, script), ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, `${script} ${args.join(' ')} failed:\n${r.stderr}`);
}

export function saveF32(dir: string, name: string, data: Float32Array, shape: number[]): Entry {
  const file = `${name}.f32`;
  writeFileSync(join(dir, file), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return { file, shape, dtype: 'f32' };
}

export function saveU8(dir: string, name: string, data: Uint8Array, shape: number[]): Entry {
  const file = `${name}.u8`;
  writeFileSync(join(dir, file), data);
  return { file, shape, dtype: 'u8' };
}

export function loadF32(dir: string, e: Entry): Float32Array {
  const buf = readFileSync(join(dir, e.file));
  const out = new Float32Array(buf.byteLength / 4);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

export function readJson(dir: string, name: string): unknown {
  return JSON.parse(readFileSync(join(dir, name), 'utf8'));
}

export function writeJson(dir: string, name: string, value: unknown): void {
  writeFileSync(join(dir, name), JSON.stringify(value, null, 1));
}

/** a[i], failing the test instead of reading undefined past the end. */
export function at(a: ArrayLike<number>, i: number): number {
  const v = a[i];
  if (v === undefined) assert.fail(`index ${i} is out of range (length ${a.length})`);
  return v;
}
