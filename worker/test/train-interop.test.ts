/**
 * What the training job writes, read by the Python ecosystem: our tokenizer.json through
 * Rust `tokenizers` and our chat rendering against transformers' apply_chat_template (the
 * same ids, text and chat text as @huggingface/tokenizers and @huggingface/jinja here);
 * the PEFT directory a train job publishes (LoRA with rsLoRA, and DoRA with its
 * magnitude vectors) loaded by PeftModel.from_pretrained on the same base gives our
 * engine's logits (relative error <= 1e-5, f32 on both sides).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { corpus } from '../src/data/synthetic.ts';
import { readSafetensors, tensorToFloat32 } from '../src/native/safetensors.ts';
import { TrainModel } from '../src/native/train.ts';
import { readPeftAdapter } from '../src/peft/adapter-dir.ts';
import { Reporter } from '../src/run/reporter.ts';
import { runTrain } from '../src/run/train-job.ts';
import { TextTokenizer } from '../src/tokenizer/tokenizer.ts';
import { rel } from './support/numeric.ts';
import { type Entry, loadF32, readJson, runPython, writeJson } from './support/python-ref.ts';
import { writeTaskJsonl, writeTinyBase } from './support/tiny-base.ts';

const work = mkdtempSync(join(tmpdir(), 'lowrank-train-interop-'));
after(() => rmSync(work, { recursive: true, force: true }));
const base = join(work, 'base');
const data = join(work, 'task.jsonl');

before(() => {
  writeTinyBase(base);
  writeTaskJsonl(data, 200, 5);
});

describe('tokenizer', () => {
  it('encodes, decodes and renders chats as Rust tokenizers and transformers do', () => {
    const tok = TextTokenizer.load(base);
    const texts = [...corpus(30, 77), 'next: 3 7 1 = 4 8 2', "it's 12 o'clock,  naïve café!\n\tdone", '<|im_start|>user\nhi<|im_end|>'];
    const chats = [
      [
        { role: 'system', content: 'You add one.' },
        { role: 'user', content: 'next: 1 2 =' },
        { role: 'assistant', content: '2 3' },
      ],
    ];
    writeJson(work, 'tok.json', { model: base, texts, chats });
    runPython('tokenizer_ref.py', work);
    const ref = readJson(work, 'tok.out.json') as { ids: number[][]; decoded: string[]; chats: string[] };
    assert.deepEqual(
      texts.map((t) => tok.encode(t)),
      ref.ids,
    );
    assert.deepEqual(
      ref.ids.map((ids) => tok.decode(ids)), // both skip special tokens by default
      ref.decoded,
    );
    assert.deepEqual(
      chats.map((c) => tok.renderChat(c, false)),
      ref.chats,
    );
  });
});

describe('a trained adapter in PEFT', () => {
  for (const type of ['rslora', 'dora'] as const) {
    it(`${type}: PeftModel.from_pretrained on the same base gives our logits`, async () => {
      const workDir = join(work, `job-${type}`);
      const spec = {
        mode: 'train',
        baseModel: { path: base, dtype: 'f32' },
        dataset: { path: data, split: 'train', format: 'auto', evalFraction: 0, packing: false, maxSeqLength: 32 },
        method: {
          type,
          rank: 4,
          alpha: 8,
          dropout: 0,
          targetModules: ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'],
          bias: 'none',
          loraBias: false,
          init: 'kaiming-uniform',
        },
        optimizer: { type: 'adamw', lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 },
        training: {
          epochs: 1,
          maxSteps: 20,
          microBatchSize: 8,
          gradientAccumulation: 1,
          evalEvery: 0,
          checkpointEvery: 0,
          logEvery: 10,
          precision: 'f32',
          recompute: false,
          transferable: false,
          seedSamples: 5,
        },
        output: { repository: 'a/b', visibility: 'private' },
        seed: 3,
      } as unknown as AdapterJobSpecDefaulted;
      const out = await runTrain(spec, { client: undefined, reporter: Reporter.create(undefined, undefined), workDir, jobId: undefined });
      const adapter = readPeftAdapter(out.dir);
      const magnitudes: Record<string, Float32Array> = {};
      for (const [key, t] of Object.entries(readSafetensors(join(out.dir, 'adapter_model.safetensors')).tensors)) {
        const m = /^base_model\.model\.(.+)\.lora_magnitude_vector$/.exec(key);
        if (m) magnitudes[m[1] as string] = tensorToFloat32(t);
      }
      assert.equal(Object.keys(magnitudes).length, type === 'dora' ? 10 : 0);
      const model = await TrainModel.load(base);
      model.setAdapter(adapter.modules, magnitudes);
      const tokens = [
        [5, 17, 40, 3, 99, 120, 7, 8],
        [60, 61, 62, 63, 64, 65, 66, 67],
      ];
      const ours = await model.forward({ tokens: Int32Array.from(tokens.flat()), rows: 2, seq: 8 }, { logits: true });
      assert.ok(ours.logits);
      writeJson(work, 'export.json', { base, adapter: out.dir, tokens });
      runPython('train_ref.py', 'peft-logits', work);
      const ref = readJson(work, 'export.out.json') as { logits: Entry };
      const e = rel(ours.logits, loadF32(work, ref.logits));
      assert.ok(e <= 1e-5, `logits rel ${e}`);
      // Trained: the adapter moved the logits away from the base's.
      const plain = await TrainModel.load(base);
      const baseLogits = (await plain.forward({ tokens: Int32Array.from(tokens.flat()), rows: 2, seq: 8 }, { logits: true })).logits;
      assert.ok(baseLogits && rel(ours.logits, baseLogits) > 1e-3);
    });
  }
});
