/** lora-worker validate: the CLI front door, run as a real process. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { EXIT } from '../src/exit-codes.ts';

const cli = join(import.meta.dirname, '..', 'src', 'cli.ts');
const examples = join(import.meta.dirname, '..', '..', 'crds', 'examples');
const tmp = mkdtempSync(join(tmpdir(), 'lora-worker-test-'));
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const write = (name: string, text: string) => {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
};

describe('lora-worker validate', () => {
  it('accepts every example and prints it with defaults, as YAML or JSON', () => {
    for (const f of readdirSync(examples).filter((n) => n.endsWith('.yaml'))) {
      const r = run('validate', '--spec', join(examples, f));
      assert.equal(r.status, EXIT.ok, `${f}: ${r.stderr}`);
      const printed = parse(r.stdout);
      assert.equal(printed.kind, parse(readFileSync(join(examples, f), 'utf8')).kind);
    }
    const j = run('validate', '--spec', join(examples, 'adapterjob-train-lora.yaml'), '--output', 'json');
    assert.equal(j.status, EXIT.ok);
    assert.equal(JSON.parse(j.stdout).apiVersion, 'lora.lowrank.dev/v1alpha1');
  });

  it('exits 65 with every field error on an invalid spec', () => {
    const doc = parse(readFileSync(join(examples, 'adapterjob-train-lora.yaml'), 'utf8'));
    doc.spec.mode = 'finetune';
    const r = run('validate', '--spec', write('bad.yaml', stringify(doc)));
    assert.equal(r.status, EXIT.badInput);
    assert.match(r.stderr, /AdapterJob is invalid: 1 problem to fix\n {2}spec\.mode: Unsupported value: "finetune"/);
    assert.match(r.stderr, /\n {2}Invalid value: null: some validation rules were not checked/);
  });

  it('accepts the short {kind, spec} form in JSON', () => {
    const doc = parse(readFileSync(join(examples, 'adapterjob-train-lora.yaml'), 'utf8'));
    const r = run('validate', '--spec', write('short.json', JSON.stringify({ kind: doc.kind, spec: doc.spec })));
    assert.equal(r.status, EXIT.ok, r.stderr);
  });

  it('names the file and the problem for unreadable, malformed or multi-document files', () => {
    const missing = run('validate', '--spec', join(tmp, 'nope.yaml'));
    assert.equal(missing.status, EXIT.badInput);
    assert.match(missing.stderr, /cannot read spec file .*nope\.yaml/);
    const broken = run('validate', '--spec', write('broken.yaml', 'kind: [AdapterJob\n'));
    assert.equal(broken.status, EXIT.badInput);
    assert.match(broken.stderr, /not valid YAML\/JSON/);
    const two = run('validate', '--spec', write('two.yaml', 'kind: AdapterJob\n---\nkind: AdapterMerge\n'));
    assert.equal(two.status, EXIT.badInput);
    assert.match(two.stderr, /expected exactly one YAML\/JSON document, found 2/);
    const scalar = run('validate', '--spec', write('scalar.yaml', '42\n'));
    assert.equal(scalar.status, EXIT.badInput);
  });

  it('exits 64 on usage errors', () => {
    assert.equal(run().status, EXIT.usage);
    assert.equal(run('train').status, EXIT.usage);
    assert.equal(run('validate').status, EXIT.usage);
    assert.equal(run('validate', '--spec', 'x', '--output', 'xml').status, EXIT.usage);
    assert.equal(run('validate', '--bogus').status, EXIT.usage);
    assert.equal(run('--help').status, EXIT.ok);
  });
});
