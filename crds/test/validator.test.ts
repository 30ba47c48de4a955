/** The validator's behaviour beyond the example table: envelope, defaults, nulls, updates. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { crds } from '../gen/schemas.ts';
import { asResource } from '../src/envelope.ts';
import { LowrankError } from '../src/errors.ts';
import type { SchemaNode } from '../src/schema-node.ts';
import { parseResource, validateResource, validateSpec } from '../src/validate.ts';

type Json = Record<string, unknown>;
type Doc = Json & { spec: Json };
const example = (f: string) => parse(readFileSync(join(import.meta.dirname, '..', 'examples', f), 'utf8')) as Doc;
const train = () => example('adapterjob-train-lora.yaml');
const getIn = (obj: unknown, path: string[]) => path.reduce<unknown>((cur, k) => (cur as Json | undefined)?.[k], obj);

describe('envelope', () => {
  it('rejects a non-object', () => {
    const r = validateResource('AdapterJob');
    assert.equal(r.ok, false);
    assert.equal(r.errors[0]?.path, '');
  });
  it('rejects an unknown kind, naming the supported ones', () => {
    const r = validateResource({ ...train(), kind: 'AdapterJobs' });
    assert.deepEqual(r.errors, [
      { path: 'kind', message: 'Unsupported value: "AdapterJobs": supported values: "AdapterJob", "AdapterMerge", "CompressionJob"' },
    ]);
  });
  it('rejects a wrong apiVersion', () => {
    const r = validateResource({ ...train(), apiVersion: 'lora.lowrank.dev/v1' });
    assert.deepEqual(r.errors, [
      { path: 'apiVersion', message: 'Unsupported value: "lora.lowrank.dev/v1": supported values: "lora.lowrank.dev/v1alpha1"' },
    ]);
  });
  it('needs metadata.name or generateName, as an RFC 1123 subdomain', () => {
    assert.deepEqual(validateResource({ ...train(), metadata: {} }).errors, [
      { path: 'metadata.name', message: 'Required value: name or generateName is required' },
    ]);
    const bad = validateResource({ ...train(), metadata: { name: 'My_Job' } });
    assert.equal(bad.errors.length, 1);
    assert.equal(bad.errors[0]?.path, 'metadata.name');
    assert.match(bad.errors[0]?.message ?? '', /^Invalid value: "My_Job": a lowercase RFC 1123 subdomain/);
  });
  it('fills apiVersion and a generated name for the short REST form', () => {
    const { spec, kind } = train();
    const r = validateResource(asResource({ kind, spec }, { generateName: 'job-' }));
    assert.deepEqual(r.errors, []);
  });
});

describe('schema', () => {
  it('reports unknown fields the way kubectl --validate=strict does', () => {
    const doc = train();
    doc.spec.learningRate = 0.1;
    assert.deepEqual(validateResource(doc).errors, [{ path: 'spec.learningRate', message: 'unknown field "spec.learningRate"' }]);
  });
  it('applies defaults to a copy and leaves the input untouched', () => {
    const doc = train();
    const before = structuredClone(doc);
    const r = validateResource(doc);
    assert.equal(r.ok, true);
    assert.deepEqual(doc, before);
    const defaulted = r.ok ? (r.value.spec as unknown as Json) : {};
    const declared = crds.AdapterJob.schema.properties?.spec?.properties ?? {};
    const withDefaults = Object.entries(declared)
      .filter(([, n]) => n.default !== undefined)
      .map(([k]) => k);
    assert.ok(withDefaults.length > 0, 'the AdapterJob spec declares defaults');
    for (const k of withDefaults) assert.ok(k in defaulted, `spec.${k} defaulted`);
  });
  it('drops null on non-nullable fields before defaulting, like the apiserver', () => {
    const doc = train();
    const field = Object.entries(crds.AdapterJob.schema.properties?.spec?.properties ?? {}).find(
      ([, n]) => n.default !== undefined && !n.nullable,
    );
    assert.ok(field, 'a defaulted field exists');
    doc.spec[field[0]] = null;
    const r = validateResource(doc);
    assert.deepEqual(r.errors, []);
    assert.deepEqual((r.ok ? (r.value.spec as unknown as Json) : {})[field[0]], field[1].default);
  });
  it('validateSpec reports paths from spec', () => {
    const r = validateSpec('AdapterJob', { ...train().spec, mode: 'finetune' });
    assert.equal(r.ok, false);
    assert.equal(r.errors[0]?.path, 'spec.mode');
  });
});

describe('transition rules', () => {
  /** Every field guarded by `self == oldSelf` in any CRD. */
  function immutable(node: SchemaNode, path: string[], out: string[][]): string[][] {
    if (node['x-kubernetes-validations']?.some((r) => r.rule.replaceAll(' ', '') === 'self==oldSelf')) out.push(path);
    for (const [k, v] of Object.entries(node.properties ?? {})) immutable(v, [...path, k], out);
    return out;
  }
  const guarded = immutable(crds.AdapterJob.schema, [], []);
  it('the AdapterJob spec has immutable fields', () => assert.ok(guarded.length > 0));
  /** The example with the scalar at `path` changed; undefined if unset or the change is invalid anyway. */
  function changedAt(doc: Doc, path: string[]): Doc | undefined {
    const v = getIn(doc, path);
    if (v === undefined || v === null || typeof v === 'object') return undefined;
    const changed = structuredClone(doc);
    const parent = getIn(changed, path.slice(0, -1)) as Json;
    parent[path.at(-1) as string] = typeof v === 'string' ? `${v}-changed` : typeof v === 'number' ? v + 1 : !v;
    return validateResource(changed).ok ? changed : undefined;
  }
  /** Scalar leaves at or under `path` in the document. */
  function leaves(doc: Doc, path: string[]): string[][] {
    const v = getIn(doc, path);
    if (v === null || v === undefined || Array.isArray(v)) return [];
    if (typeof v !== 'object') return [path];
    return Object.keys(v).flatMap((k) => leaves(doc, [...path, k]));
  }
  it('are skipped on create and enforced on update', () => {
    const doc = train();
    const path = guarded.flatMap((p) => leaves(doc, p)).find((p) => changedAt(doc, p));
    assert.ok(path, `an immutable scalar can change validly in the example (guarded: ${guarded.map((p) => p.join('.')).join(', ')})`);
    const changed = changedAt(doc, path) as Doc;
    assert.equal(validateResource(doc, { old: doc }).ok, true, 'an unchanged update is valid');
    const r = validateResource(changed, { old: doc });
    assert.equal(r.ok, false);
    assert.equal(r.errors.length, 1);
    const owner = guarded.find((g) => g.every((k, i) => path[i] === k)) as string[];
    assert.equal(r.errors[0]?.path, owner.join('.'));
  });
});

describe('parseResource', () => {
  it('throws invalid_spec with every field error', () => {
    const doc = train();
    doc.spec.extra = 1;
    doc.spec.other = 2;
    assert.throws(
      () => parseResource(doc),
      (err: unknown) => err instanceof LowrankError && err.code === 'invalid_spec' && err.status === 422 && err.errors.length === 2,
    );
  });
});
