/**
 * Every example manifest is valid, and every case of the invalid table fails with
 * exactly its expected errors (path and message), as kubectl would print them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { validateResource } from '../src/validate.ts';
import { mergePatch } from './merge-patch.ts';

const dir = join(import.meta.dirname, '..', 'examples');
const examples = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .sort();
const load = (f: string) => parse(readFileSync(join(dir, f), 'utf8')) as Record<string, unknown>;

describe('example manifests', () => {
  it('cover every kind and the modes of each', () => {
    const kinds = new Set(examples.map((f) => load(f).kind));
    assert.deepEqual([...kinds].sort(), ['AdapterJob', 'AdapterMerge', 'CompressionJob']);
    const modes = new Set(
      examples
        .map((f) => load(f))
        .filter((d) => d.kind === 'AdapterJob')
        .map((d) => (d.spec as { mode: string }).mode),
    );
    assert.deepEqual([...modes].sort(), ['generate', 'train', 'train-generator', 'transfer']);
  });
  for (const file of examples) {
    it(`${file} is valid`, () => {
      const result = validateResource(load(file));
      assert.deepEqual(result.errors, [], `${file}:\n${result.errors.map((e) => `  ${e.path}: ${e.message}`).join('\n')}`);
      assert.equal(result.ok, true);
    });
  }
});

interface InvalidCase {
  name: string;
  example: string;
  patch: unknown;
  errors: { path: string; message: string }[];
}

const cases = parse(readFileSync(join(import.meta.dirname, 'invalid-cases.yaml'), 'utf8')) as InvalidCase[];
const key = (e: { path: string; message: string }) => `${e.path}: ${e.message}`;

describe('invalid manifests fail with their exact errors', () => {
  it('the table is large enough to mean something', () => assert.ok(cases.length >= 25, `only ${cases.length} cases`));
  for (const c of cases) {
    it(c.name, () => {
      const doc = mergePatch(load(c.example), c.patch);
      const result = validateResource(doc);
      assert.equal(result.ok, false, 'expected the manifest to be rejected');
      assert.deepEqual(result.errors.map(key).sort(), c.errors.map(key).sort());
    });
  }
});
