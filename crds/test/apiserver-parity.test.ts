/**
 * Differential test: the platform's validator against the Kubernetes apiserver's own
 * CRD validation code (crds/conformance, k8s.io/apiextensions-apiserver), on every
 * example, every invalid case, updates that touch immutable fields, and a few hundred
 * seeded random mutations of the examples. Both must report the same errors, with the
 * same paths and words, so that `kubectl apply`, the REST API and `lora-worker` agree.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { type ReferenceCase, referenceValidate } from '../conformance/reference.ts';
import { validateResource } from '../src/validate.ts';
import { mergePatch } from './merge-patch.ts';

const root = join(import.meta.dirname, '..');
type Json = Record<string, unknown>;
const examples = Object.fromEntries(
  readdirSync(join(root, 'examples'))
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => [f, parse(readFileSync(join(root, 'examples', f), 'utf8')) as Json]),
);

/** mulberry32: a small seeded PRNG, so every run checks the same mutations. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Path = (string | number)[];
function paths(value: unknown, at: Path = []): Path[] {
  const out: Path[] = at.length > 0 ? [at] : [];
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) out.push(...paths(v, [...at, i]));
  } else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...at, k]));
  return out;
}

const replacements: ((v: unknown, r: () => number) => unknown)[] = [
  () => undefined, // delete
  (v) => (typeof v === 'string' ? 7 : 'seven'),
  (v) => (Array.isArray(v) ? {} : [v]),
  () => -1,
  () => 0,
  () => 0.5,
  () => 1e9,
  () => '',
  () => 'x'.repeat(300),
  () => 'Bad Name!',
  () => 'bogus',
  () => true,
  (v) => (Array.isArray(v) ? [...v, ...v] : v),
  (v) => (Array.isArray(v) ? [] : v),
  (v) => (v && typeof v === 'object' && !Array.isArray(v) ? { ...v, unexpectedField: 1 } : v),
  (v, r) => (typeof v === 'number' ? Math.round(v * (r() * 4)) : v),
];

function mutate(doc: Json, r: () => number): Json {
  const copy = structuredClone(doc);
  const candidates = paths(copy.spec, ['spec']);
  const path = candidates[Math.floor(r() * candidates.length)] as Path;
  const parent = path.slice(0, -1).reduce<unknown>((cur, k) => (cur as Json)[k as string], copy) as Json | unknown[];
  const key = path.at(-1) as string | number;
  const next = (replacements[Math.floor(r() * replacements.length)] as (v: unknown, r: () => number) => unknown)(
    (parent as Json)[key as string],
    r,
  );
  if (next === undefined) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key as string];
  } else (parent as Json)[key as string] = next;
  return copy;
}

interface Case extends ReferenceCase {
  name: string;
}

const cases: Case[] = [];
for (const [f, doc] of Object.entries(examples)) cases.push({ name: `example ${f}`, object: doc });
const invalid = parse(readFileSync(join(root, 'test', 'invalid-cases.yaml'), 'utf8')) as {
  name: string;
  example: string;
  patch: unknown;
}[];
for (const c of invalid) cases.push({ name: `invalid case: ${c.name}`, object: mergePatch(examples[c.example], c.patch) });
const r = rng(20261123);
for (const [f, doc] of Object.entries(examples)) {
  for (let i = 0; i < 16; i++) cases.push({ name: `mutation ${i} of ${f}`, object: mutate(doc, r) });
  for (let i = 0; i < 4; i++) cases.push({ name: `update ${i} of ${f}`, object: mutate(doc, r), old: doc });
  cases.push({ name: `unchanged update of ${f}`, object: doc, old: doc });
}

const key = (e: { path: string; message: string }) => `${e.path} | ${e.message}`;

/**
 * One deliberate difference: for an integer value, kube-openapi truncates a fractional
 * bound to an integer (MaximumInt), printing "less than or equal to 0" for a bound of
 * 0.5. We print the real bound; the comparison maps ours to the apiserver's wording.
 */
const asApiserverWords = (k: string) =>
  k.replace(/^(.*Invalid value: -?\d+: .* in body should be (?:less|greater) than (?:or equal to )?)(-?\d+)\.\d+$/, '$1$2');

describe('validator agrees with the Kubernetes apiserver', () => {
  const reference = referenceValidate(join(root, 'bases'), cases);

  it('the apiserver accepts the CRDs themselves', () => {
    assert.deepEqual(
      Object.entries(reference.crdErrors).filter(([, errs]) => errs.length > 0),
      [],
    );
    assert.equal(Object.keys(reference.crdErrors).length, 3);
  });

  it(`on ${cases.length} cases: examples, the invalid table, updates and seeded mutations`, () => {
    const mismatches: string[] = [];
    let rejected = 0;
    cases.forEach((c, i) => {
      const want = (reference.results[i] ?? []).map(key).sort();
      const got = validateResource(c.object, c.old === undefined ? {} : { old: c.old })
        .errors.map(key)
        .map(asApiserverWords)
        .sort();
      if (want.length > 0) rejected++;
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        mismatches.push(`${c.name}\n    apiserver: ${want.join('\n               ')}\n    ours:      ${got.join('\n               ')}`);
      }
    });
    assert.ok(rejected > cases.length / 3, `the mutations should mostly be invalid (${rejected} of ${cases.length} rejected)`);
    assert.equal(mismatches.length, 0, `${mismatches.length} cases differ:\n${mismatches.slice(0, 15).join('\n')}`);
  });
});
