import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { admit } from '../src/admission.ts';

const load = () => parse(readFileSync(join(import.meta.dirname, '..', '..', 'crds', 'examples', 'adaptermerge-ties.yaml'), 'utf8'));

describe('admission', () => {
  it('accepts a valid resource, defaulted, with Accepted=True at its generation', () => {
    const cr = { ...load(), metadata: { ...load().metadata, generation: 3 } };
    const a = admit(cr);
    assert.equal(a.accepted, true);
    assert.deepEqual(a.condition, {
      type: 'Accepted',
      status: 'True',
      reason: 'SpecValid',
      message: 'spec is valid',
      observedGeneration: 3,
    });
  });
  it('admits AdapterJobs of the ICM-LoRA modes (train-generator, generate) for the worker', () => {
    for (const f of ['adapterjob-train-generator.yaml', 'adapterjob-generate.yaml']) {
      const cr = parse(readFileSync(join(import.meta.dirname, '..', '..', 'crds', 'examples', f), 'utf8'));
      const a = admit(cr);
      assert.equal(a.accepted, true, `${f}: ${a.condition.message}`);
    }
  });
  it('turns an invalid spec into Accepted=False/InvalidSpec naming each field', () => {
    const cr = load();
    cr.metadata.generation = 2;
    cr.spec.method = 'average';
    cr.spec.surprise = true;
    const a = admit(cr);
    assert.equal(a.accepted, false);
    assert.equal(a.condition.status, 'False');
    assert.equal(a.condition.reason, 'InvalidSpec');
    assert.equal(a.condition.observedGeneration, 2);
    assert.match(a.condition.message, /spec\.method: Unsupported value: "average"/);
    assert.match(a.condition.message, /spec\.surprise: unknown field "spec\.surprise"/);
  });
  it('keeps the condition message bounded', () => {
    const cr = load();
    for (let i = 0; i < 200; i++) cr.spec[`unknownField${i}`] = i;
    const a = admit(cr);
    assert.equal(a.accepted, false);
    assert.ok(a.condition.message.length <= 1024);
    assert.equal(a.accepted ? 0 : a.errors.length, 200);
  });
});
