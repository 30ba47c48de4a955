/**
 * What the apiserver would refuse or users would miss in the CRDs themselves: structural
 * schemas (a type and a description on every field, no additionalProperties: false),
 * CEL rules that compile, the status subresource, short names and printer columns.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseCel } from '@marcbachmann/cel-js';
import { parse } from 'yaml';
import type { SchemaNode } from '../src/schema-node.ts';

const dir = join(import.meta.dirname, '..', 'bases');
const crds = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => ({ file: f, doc: parse(readFileSync(join(dir, f), 'utf8')) }));

const expected: Record<string, { short: string; columns: string[] }> = {
  AdapterJob: { short: 'aj', columns: ['Mode', 'Method', 'Phase', 'Progress', 'Version', 'Age'] },
  AdapterMerge: { short: 'am', columns: ['Method', 'Phase', 'Progress', 'Version', 'Age'] },
  CompressionJob: { short: 'cpj', columns: ['Mode', 'Phase', 'Progress', 'Version', 'Age'] },
};

function visit(node: SchemaNode, path: string, fn: (n: SchemaNode, p: string) => void): void {
  fn(node, path);
  for (const [k, v] of Object.entries(node.properties ?? {})) visit(v, `${path}.${k}`, fn);
  if (node.items) visit(node.items, `${path}[]`, fn);
  if (typeof node.additionalProperties === 'object') visit(node.additionalProperties, `${path}{}`, fn);
}

describe('CRDs', () => {
  it('define the three kinds', () => {
    assert.deepEqual(crds.map((c) => c.doc.spec.names.kind).sort(), Object.keys(expected));
  });
  for (const { file, doc } of crds) {
    const kind = doc.spec.names.kind as string;
    describe(file, () => {
      const version = doc.spec.versions[0];
      const schema = version.schema.openAPIV3Schema as SchemaNode;
      it('is apiextensions.k8s.io/v1 in group lora.lowrank.dev, v1alpha1, namespaced', () => {
        assert.equal(doc.apiVersion, 'apiextensions.k8s.io/v1');
        assert.equal(doc.metadata.name, `${doc.spec.names.plural}.lora.lowrank.dev`);
        assert.equal(doc.spec.group, 'lora.lowrank.dev');
        assert.equal(doc.spec.scope, 'Namespaced');
        assert.equal(version.name, 'v1alpha1');
        assert.equal(version.served && version.storage, true);
      });
      it('has its short name, the lowrank category, the status subresource and printer columns', () => {
        assert.ok(doc.spec.names.shortNames.includes(expected[kind]?.short));
        assert.ok(doc.spec.names.categories.includes('lowrank'));
        assert.deepEqual(version.subresources.status, {});
        const names = version.additionalPrinterColumns.map((c: { name: string }) => c.name);
        for (const col of expected[kind]?.columns ?? []) assert.ok(names.includes(col), `printer column ${col}`);
      });
      it('is structural: every field typed and described, no additionalProperties: false', () => {
        const problems: string[] = [];
        visit(schema, kind, (n, p) => {
          const typed = n.type || n['x-kubernetes-int-or-string'] || n['x-kubernetes-preserve-unknown-fields'];
          if (!typed) problems.push(`${p}: no type`);
          if (p !== kind && p !== `${kind}.metadata` && !p.endsWith('[]') && !p.endsWith('{}') && !n.description)
            problems.push(`${p}: no description`);
          if (n.additionalProperties === false) problems.push(`${p}: additionalProperties: false is not allowed in a CRD`);
          if (n.properties && typeof n.additionalProperties === 'object')
            problems.push(`${p}: properties and additionalProperties together`);
        });
        assert.deepEqual(problems, []);
      });
      it('has CEL rules that compile, each with a message', () => {
        let count = 0;
        visit(schema, kind, (n, p) => {
          for (const r of n['x-kubernetes-validations'] ?? []) {
            count++;
            assert.doesNotThrow(() => parseCel(r.rule), `${p}: ${r.rule}`);
            assert.ok(r.message, `${p}: rule ${r.rule} has no message`);
          }
        });
        assert.ok(count > 0);
      });
    });
  }
});
