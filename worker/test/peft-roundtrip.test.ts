/**
 * Every merge outputs an adapter PEFT loads: two PEFT adapters of different ranks,
 * targets and scaling rules (LoRA and rsLoRA) are read, merged (cat) and rank-reduced by
 * our core, written as PEFT directories, and loaded back with PeftModel.from_pretrained,
 * whose deltas must equal the weighted sum of the inputs' (cat: rel <= 1e-5) or its
 * truncated SVD (rank 4: rel <= 1e-4, the §8 low-rank tolerance with a float32 chain).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { reduceRank } from '../src/native/compress.ts';
import { mergeAdapters } from '../src/native/merge.ts';
import { patternValue, readPeftAdapter, writePeftAdapter } from '../src/peft/adapter-dir.ts';
import { mergeIntoBase } from '../src/peft/merge-into-base.ts';
import { pythonDir, referencePython } from './support/python-ref.ts';

const dir = mkdtempSync(join(tmpdir(), 'peft-roundtrip-'));
const py = (...args: string[]) =>
  JSON.parse(
    execFileSync(referencePython(), [join(pythonDir, 'peft_roundtrip.py'), ...args], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .at(-1) as string,
  );

describe('PEFT directories round trip through PeftModel.from_pretrained', () => {
  before(() => {
    py('make', dir);
  });

  it('reads PEFT adapters with their ranks and scaling rules', () => {
    const a = readPeftAdapter(join(dir, 'a'));
    const b = readPeftAdapter(join(dir, 'b'));
    assert.deepEqual(Object.keys(a.modules).sort(), [
      'model.layers.0.self_attn.q_proj',
      'model.layers.0.self_attn.v_proj',
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.self_attn.v_proj',
    ]);
    assert.deepEqual(Object.keys(b.modules).sort(), [
      'model.layers.0.self_attn.k_proj',
      'model.layers.0.self_attn.o_proj',
      'model.layers.0.self_attn.q_proj',
    ]);
    assert.equal(a.modules['model.layers.0.self_attn.q_proj']?.scale, 8 / 4);
    assert.equal(b.modules['model.layers.0.self_attn.q_proj']?.scale, 16 / Math.sqrt(8), 'rsLoRA: alpha / sqrt(r)');
  });

  it('a cat merge written by us loads in PEFT with exactly the weighted sum of deltas', async () => {
    const a = readPeftAdapter(join(dir, 'a'));
    const b = readPeftAdapter(join(dir, 'b'));
    const merged = await mergeAdapters([{ modules: a.modules }, { modules: b.modules, useRslora: true }], {
      combination: 'cat',
      weights: [0.6, 0.4],
    });
    const out = join(dir, 'merged');
    const config = writePeftAdapter(out, merged.modules, { base_model_name_or_path: 'local/tiny-llama' });
    assert.equal(config.use_rslora, false, 'scalings are folded: no rsLoRA flag to misread (PEFT defect 1)');
    const r = py('check', dir, out, '0.6', '0.4', '0');
    assert.equal(r.modules, 6, 'the union of both adapters');
    assert.ok(r.max_rel <= 1e-5, `max rel ${r.max_rel}`);
    const written = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    for (const [name, m] of Object.entries(merged.modules)) {
      assert.equal(patternValue(written.rank_pattern, name) ?? written.r, m.r, `${name}: rank_pattern round-trips`);
    }
  });

  it('merging an adapter into the base gives the weights PEFT merge_and_unload gives; unmerging restores the base', () => {
    const a = readPeftAdapter(join(dir, 'b')); // rsLoRA, layer 0 only
    const ours = join(dir, 'merged-base-ours');
    const result = mergeIntoBase(join(dir, 'base'), a.modules, ours);
    assert.equal(result.merged.length, 3);
    py('merged-base', dir, 'b', join(dir, 'merged-base-peft'));
    const vsPeft = py('compare-models', ours, join(dir, 'merged-base-peft'));
    assert.deepEqual([vsPeft.only_a, vsPeft.only_b], [[], []]);
    assert.ok(vsPeft.max_rel <= 1e-6, `merged weights differ from PEFT by rel ${vsPeft.max_rel} (tolerance 1e-6, float32)`);
    const back = join(dir, 'unmerged');
    mergeIntoBase(ours, a.modules, back, 'unmerge');
    const vsBase = py('compare-models', back, join(dir, 'base'));
    assert.ok(vsBase.max_rel <= 1e-6, `unmerge leaves rel ${vsBase.max_rel}`);
    assert.ok(existsSync(join(ours, 'config.json')), 'the model directory keeps its config');
  });

  it('the merge reduced to rank 4 loads in PEFT as the truncated SVD of the sum', async () => {
    const a = readPeftAdapter(join(dir, 'a'));
    const b = readPeftAdapter(join(dir, 'b'));
    const merged = await mergeAdapters([{ modules: a.modules }, { modules: b.modules, useRslora: true }], {
      combination: 'cat',
      weights: [0.6, 0.4],
    });
    const reduced = reduceRank(merged.modules, { policy: { fixed: 4 } });
    const out = join(dir, 'reduced');
    writePeftAdapter(out, reduced.modules);
    const r = py('check', dir, out, '0.6', '0.4', '4');
    assert.ok(r.max_rel <= 1e-4, `max rel ${r.max_rel}`);
  });
});
