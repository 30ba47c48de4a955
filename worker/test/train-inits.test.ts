/**
 * The train job's inits that change the base (METHODS §0.5): a PiSSA job trains on W_res,
 * its eval loss drops, and the adapter it publishes (rank 2r: A' = [A; A0], B' = [B | −B0])
 * loaded by PeftModel.from_pretrained on the ORIGINAL base gives our engine's logits
 * (rel ≤ 1e-5, f32 both sides), which equal those of the model it trained (W_res + s·BA,
 * rel ≤ 1e-4: the 2r export adds fp32 rounding of W − s·B0A0 + s·B0A0).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import type { LoraModule } from '../src/native/linalg.ts';
import { PROJECTIONS, type Projection, TrainModel } from '../src/native/train.ts';
import { pissaInit } from '../src/native/train-init.ts';
import { readPeftAdapter } from '../src/peft/adapter-dir.ts';
import { Reporter } from '../src/run/reporter.ts';
import { runTrain } from '../src/run/train-job.ts';
import type { JobOutcome } from '../src/run/types.ts';
import { rel } from './support/numeric.ts';
import { type Entry, loadF32, readJson, runPython, writeJson } from './support/python-ref.ts';
import { writeTaskJsonl, writeTinyBase } from './support/tiny-base.ts';

const work = mkdtempSync(join(tmpdir(), 'lowrank-train-inits-'));
after(() => rmSync(work, { recursive: true, force: true }));
const base = join(work, 'base');
const data = join(work, 'task.jsonl');
const targets: Projection[] = ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'];
const tokens = [
  [5, 17, 40, 3, 99, 120, 7, 8],
  [60, 61, 62, 63, 64, 65, 66, 67],
];
const probe = { tokens: Int32Array.from(tokens.flat()), rows: 2, seq: 8 };

before(() => {
  writeTinyBase(base);
  writeTaskJsonl(data, 240, 5);
});

function spec(method: Record<string, unknown>, seed = 3): AdapterJobSpecDefaulted {
  return {
    mode: 'train',
    baseModel: { path: base, dtype: 'f32' },
    dataset: { path: data, split: 'train', format: 'auto', evalFraction: 0.1, packing: false, maxSeqLength: 32 },
    method: { rank: 4, alpha: 8, dropout: 0, targetModules: targets, bias: 'none', loraBias: false, init: 'kaiming-uniform', ...method },
    optimizer: { type: 'adamw', lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 },
    schedule: { type: 'linear', minLrRatio: 0, warmupSteps: 2 },
    training: {
      epochs: 1,
      maxSteps: 30,
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
    seed,
  } as unknown as AdapterJobSpecDefaulted;
}

const train = (name: string, s: AdapterJobSpecDefaulted): Promise<JobOutcome> =>
  runTrain(s, { client: undefined, reporter: Reporter.create(undefined, undefined), workDir: join(work, name), jobId: undefined });

/** PEFT's logits for the adapter directory on the unmodified base, and ours for the same. */
async function peftAgrees(name: string, dir: string): Promise<Float32Array> {
  const adapter = readPeftAdapter(dir);
  const model = await TrainModel.load(base);
  model.setAdapter(adapter.modules);
  const ours = (await model.forward(probe, { logits: true })).logits;
  assert.ok(ours);
  writeJson(work, 'export.json', { base, adapter: dir, tokens });
  runPython('train_ref.py', 'peft-logits', work);
  const ref = readJson(work, 'export.out.json') as { logits: Entry };
  const e = rel(ours, loadF32(work, ref.logits));
  assert.ok(e <= 1e-5, `${name}: PEFT logits rel ${e}`);
  return ours;
}

function firstHalf(m: LoraModule): LoraModule {
  const r = m.r / 2;
  const B = new Float32Array(m.out * r);
  for (let o = 0; o < m.out; o++) B.set(m.B.subarray(o * m.r, o * m.r + r), o * r);
  return { r, in: m.in, out: m.out, A: m.A.slice(0, r * m.in), B, scale: m.scale };
}

describe('train job: PiSSA', () => {
  for (const pissa of [{ niter: 0 }, { niter: 4, oversampling: 4 }]) {
    it(`${pissa.niter ? 'randomized' : 'exact'} SVD: eval loss drops; PEFT loads the 2r export on the original base with our logits`, async () => {
      const name = `pissa-${pissa.niter}`;
      const out = await train(name, spec({ type: 'pissa', pissa }));
      const m = out.metrics as { evalLoss: number; baseEvalLoss: number };
      assert.ok(m.evalLoss < 0.9 * m.baseEvalLoss, `eval loss ${m.baseEvalLoss} -> ${m.evalLoss}`);
      const config = JSON.parse(readFileSync(join(out.dir, 'adapter_config.json'), 'utf8'));
      assert.equal(config.r, 8);
      assert.equal(config.lora_alpha, 16);
      assert.equal(config.init_lora_weights, true); // PEFT must not redo the SVD on load (§0.3)
      assert.equal(Object.keys(readPeftAdapter(out.dir).modules).length, 2 * targets.length);
      const exported = await peftAgrees(name, out.dir);

      // The model the job trained: W_res from the same init, plus the trained A, B (A' and B''s first halves).
      const trained = await TrainModel.load(base);
      pissaInit(trained, {
        r: 4,
        alpha: 8,
        targets,
        niter: pissa.niter,
        oversample: pissa.oversampling ?? 0,
        seed: 3,
      });
      const adapter = readPeftAdapter(out.dir).modules;
      trained.setAdapter(Object.fromEntries(Object.entries(adapter).map(([p, mod]) => [p, firstHalf(mod)])));
      const onResidual = (await trained.forward(probe, { logits: true })).logits;
      assert.ok(onResidual);
      const e = rel(exported, onResidual);
      assert.ok(e <= 1e-4, `export on W vs trained on W_res: rel ${e}`);
      // and the adapter trained: the export is not the base.
      const plain = await TrainModel.load(base);
      const baseLogits = (await plain.forward(probe, { logits: true })).logits;
      assert.ok(baseLogits && rel(exported, baseLogits) > 1e-3);
      assert.equal(PROJECTIONS.length, 7);
    });
  }
});
