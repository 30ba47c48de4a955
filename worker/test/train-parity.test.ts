/**
 * The native training engine against PyTorch + transformers + PEFT (versions pinned in
 * worker/test/python/requirements.txt) on tiny random models the test creates, one per
 * family shape (worker/test/support/family-shapes.ts, shared with train-inits.test.ts):
 *   llama   GQA, llama3 rope scaling, LoRA on all seven projections;
 *   qwen2   q/k/v biases, rsLoRA on q/v/o/down;
 *   mistral sliding window (4) shorter than the sequence, LoRA on q/k/gate/up;
 *   dora    Llama with attention biases, DoRA (PEFT's magnitude, m ≠ ‖W + sBA‖) on six projections;
 *   smollm  Llama with tied embeddings, bf16 weights in shards (index.json), MHA.
 * Adapters have B ≠ 0 (METHODS §1 parity rule). Tolerances (METHODS §8.1, fp32):
 *   logits rel ≤ 1e-5; loss rel ≤ 1e-5; A/B (and DoRA magnitude) gradients of the mean loss rel ≤ 2e-5
 *   per module; 4 AdamW steps (weight decay, clipping that triggers, 2 micro-batches per
 *   step, warmup + cosine/linear): per-step loss rel ≤ 1e-4, final factors rel ≤ 1e-4;
 *   batched greedy generation (KV cache, adapter on, one row left-padded): the same tokens
 *   as generate(do_sample=False) with the attention mask.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readSafetensors, tensorToFloat32 } from '../src/native/safetensors.ts';
import { initLora, type OptimizerOptions, type TokenBatch, TrainModel } from '../src/native/train.ts';
import { exportForOriginalBase, pissaInit } from '../src/native/train-init.ts';
import { readPeftAdapter, writePeftAdapter } from '../src/peft/adapter-dir.ts';
import { FAMILY_SHAPES, makeFamilyModels } from './support/family-shapes.ts';
import { delta64, rel } from './support/numeric.ts';
import { type Entry, loadF32, readJson, runPython, saveF32, writeJson } from './support/python-ref.ts';

const work = mkdtempSync(join(tmpdir(), 'lowrank-train-parity-'));
after(() => rmSync(work, { recursive: true, force: true }));

const models = FAMILY_SHAPES;

/** Deterministic pseudo-random tokens (an LCG: the test's data, not a secret). */
function tokens(rows: number, seq: number, vocab: number, salt: number): number[][] {
  let x = 12345 + salt * 7919;
  return Array.from({ length: rows }, () =>
    Array.from({ length: seq }, () => {
      x = (x * 1103515245 + 12345) % 2147483648;
      return x % vocab;
    }),
  );
}

/** Labels = tokens with a masked prompt (the first `prompt` positions) per row. */
function labels(t: number[][], prompt: number[]): number[][] {
  return t.map((row, i) => row.map((v, j) => (j < (prompt[i] ?? 0) ? -100 : v)));
}

const toBatch = (t: number[][], l: number[][]): TokenBatch => ({
  tokens: Int32Array.from(t.flat()),
  labels: Int32Array.from(l.flat()),
  rows: t.length,
  seq: t[0]?.length ?? 0,
});

const optimizer: Record<string, OptimizerOptions> = {
  llama: { lr: 0.02, weightDecay: 0.1, maxGradNorm: 0.5, schedule: 'cosine', warmupSteps: 1, totalSteps: 4 },
  qwen2: {
    lr: 0.01,
    beta1: 0.8,
    beta2: 0.95,
    eps: 1e-6,
    weightDecay: 0.01,
    maxGradNorm: 1.0,
    schedule: 'linear',
    warmupSteps: 2,
    totalSteps: 4,
  },
  mistral: { lr: 0.01, weightDecay: 0, schedule: 'constant' },
  dora: { lr: 0.01, weightDecay: 0.05, maxGradNorm: 0.3, schedule: 'linear', warmupSteps: 1, totalSteps: 4 },
  smollm: { lr: 0.02, weightDecay: 0.05, maxGradNorm: 0.1, schedule: 'cosine', warmupSteps: 0, totalSteps: 4 },
};

interface Case {
  id: string;
  model: string;
  tokens: number[][];
  labels: number[][];
  train: { optimizer: OptimizerOptions; steps: { tokens: number[][]; labels: number[][] }[][] };
  generate: { prompt: number[][]; maxNewTokens: number; leftPad: number[] };
}

/** A, B, and M (DoRA's magnitude vector). */
type Param = 'A' | 'B' | 'M';

interface Out {
  loss: number;
  logits: Entry;
  grads: Record<string, Partial<Record<Param, Entry>>>;
  generated: number[][];
  train: { losses: number[]; gradNorms: number[]; lrs: number[]; params: Record<string, Partial<Record<Param, Entry>>> };
}

const cases: Case[] = models.map((m, k) => {
  const V = m.config.vocab_size;
  const t = tokens(2, 12, V, k);
  const steps = Array.from({ length: 4 }, (_, s) => {
    // two micro-batches per step with different shapes and label counts
    const a = tokens(2, 10, V, 100 + 10 * k + s);
    const b = tokens(1, 14, V, 200 + 10 * k + s);
    return [
      { tokens: a, labels: labels(a, [3, 0]) },
      { tokens: b, labels: labels(b, [6]) },
    ];
  });
  return {
    id: m.id,
    model: m.id,
    tokens: t,
    labels: labels(t, [4, 1]),
    train: { optimizer: optimizer[m.id] as OptimizerOptions, steps },
    // 7 prompt + 9 new tokens: past mistral's window of 4 and the llama3 rope's original 8 positions.
    // Row 1 is a 4-token prompt left-padded (pad id 0) to 7, as a batched tokenizer makes.
    generate: {
      prompt: tokens(2, 7, V, 50 + k).map((row, i) => (i === 1 ? row.map((t, j) => (j < 3 ? 0 : t)) : row)),
      maxNewTokens: 9,
      leftPad: [0, 3],
    },
  };
});

const outs = new Map<string, Out>();

before(() => {
  makeFamilyModels(work, models);
  writeJson(work, 'cases.json', { cases });
  runPython('train_ref.py', 'run', work);
  for (const c of cases) outs.set(c.id, readJson(work, `${c.id}.out.json`) as Out);
});

/** PEFT's adapter: factors through readPeftAdapter, DoRA magnitudes straight from the file. */
async function loaded(c: Case): Promise<TrainModel> {
  const model = await TrainModel.load(join(work, c.model, 'base'));
  const dir = join(work, c.model, 'adapter');
  const magnitudes: Record<string, Float32Array> = {};
  for (const [key, t] of Object.entries(readSafetensors(join(dir, 'adapter_model.safetensors')).tensors)) {
    const m = /^base_model\.model\.(.+)\.lora_magnitude_vector$/.exec(key);
    if (m?.[1]) magnitudes[m[1]] = tensorToFloat32(t);
  }
  model.setAdapter(readPeftAdapter(dir).modules, magnitudes);
  return model;
}

/** Our value of parameter `w` of a module (factors or DoRA magnitude). */
function ours(x: { A: Float32Array; B: Float32Array; magnitude?: Float32Array }, w: Param): Float32Array {
  const v = w === 'M' ? x.magnitude : x[w];
  assert.ok(v, `missing ${w}`);
  return v;
}

describe('training engine vs transformers + PEFT', () => {
  for (const c of cases) {
    it(`${c.id}: logits, loss and LoRA gradients`, async () => {
      const ref = outs.get(c.id);
      assert.ok(ref);
      const model = await loaded(c);
      const r = await model.forward(toBatch(c.tokens, c.labels), { logits: true, backward: true });
      assert.ok(r.logits);
      const logitsRel = rel(r.logits, loadF32(work, ref.logits));
      assert.ok(logitsRel <= 1e-5, `logits rel ${logitsRel}`);
      const lossRel = Math.abs(r.loss - ref.loss) / Math.abs(ref.loss);
      assert.ok(lossRel <= 1e-5, `loss ${r.loss} vs ${ref.loss}`);
      const grads = model.gradients();
      assert.deepEqual(Object.keys(grads).sort(), Object.keys(ref.grads).sort());
      let checked = 0;
      for (const [path, g] of Object.entries(ref.grads)) {
        const mine = grads[path];
        assert.ok(mine);
        for (const [w, entry] of Object.entries(g) as [Param, Entry][]) {
          const e = rel(ours(mine, w), loadF32(work, entry));
          assert.ok(e <= 2e-5, `${path} grad ${w} rel ${e}`);
          checked += w === 'M' ? 1 : 0;
        }
      }
      assert.equal(checked, c.id === 'dora' ? Object.keys(grads).length : 0, 'DoRA magnitude gradients compared');
    });

    it(`${c.id}: batched greedy generation (KV cache, left padding) gives transformers' tokens`, async () => {
      const ref = outs.get(c.id);
      assert.ok(ref);
      const model = await loaded(c);
      const out = await model.generate({
        prompt: Int32Array.from(c.generate.prompt.flat()),
        rows: 2,
        maxNewTokens: c.generate.maxNewTokens,
        leftPad: c.generate.leftPad,
      });
      assert.deepEqual(Array.from(out), ref.generated.flat());
    });

    it(`${c.id}: ${c.train.steps.length} AdamW steps with accumulation, clipping and schedule`, async () => {
      const ref = outs.get(c.id);
      assert.ok(ref);
      const model = await loaded(c);
      for (const [s, step] of c.train.steps.entries()) {
        const res = await model.trainStep(
          step.map((mb) => toBatch(mb.tokens, mb.labels)),
          c.train.optimizer,
        );
        const want = ref.train.losses[s] ?? Number.NaN;
        assert.ok(Math.abs(res.loss - want) <= 1e-4 * Math.abs(want), `step ${s} loss ${res.loss} vs ${want}`);
        const wantNorm = ref.train.gradNorms[s] ?? Number.NaN;
        assert.ok(Math.abs(res.gradNorm - wantNorm) <= 1e-4 * wantNorm, `step ${s} grad norm ${res.gradNorm} vs ${wantNorm}`);
        assert.ok(Math.abs(res.lr - (ref.train.lrs[s] ?? Number.NaN)) <= 1e-12, `step ${s} lr ${res.lr} vs ${ref.train.lrs[s]}`);
        assert.equal(res.step, s + 1);
      }
      const params = model.adapter();
      const mags = model.magnitudes();
      for (const [path, p] of Object.entries(ref.train.params)) {
        const mod = params[path];
        assert.ok(mod);
        const mine = { A: mod.A, B: mod.B, ...(mags[path] ? { magnitude: mags[path] } : {}) };
        for (const [w, entry] of Object.entries(p) as [Param, Entry][]) {
          const e = rel(ours(mine, w), loadF32(work, entry));
          assert.ok(e <= 1e-4, `${path} ${w} after training rel ${e}`);
        }
      }
    });
  }
});

describe('an adapter trained here, loaded by PEFT', () => {
  it('PeftModel.from_pretrained gives our logits (rel <= 1e-5)', async () => {
    const c = cases[1] as Case; // qwen2: biases, GQA 4/1
    const model = await TrainModel.load(join(work, c.model, 'base'));
    // PEFT's default init (B = 0) with rsLoRA, trained 3 steps so that B moves.
    model.setAdapter(
      initLora(model.config, { r: 4, alpha: 8, useRslora: true, targets: ['q_proj', 'k_proj', 'o_proj', 'up_proj'], seed: 11 }),
    );
    for (const step of c.train.steps.slice(0, 3)) {
      await model.trainStep(
        step.map((mb) => toBatch(mb.tokens, mb.labels)),
        { lr: 0.05, weightDecay: 0.01 },
      );
    }
    const adapterDir = join(work, 'trained-adapter');
    writePeftAdapter(adapterDir, model.adapter(), { base_model_name_or_path: 'tiny-qwen2' });
    const ours = await model.forward(toBatch(c.tokens, c.labels), { logits: true });
    assert.ok(ours.logits);
    writeJson(work, 'export.json', { base: join(work, c.model, 'base'), adapter: adapterDir, tokens: c.tokens });
    runPython('train_ref.py', 'peft-logits', work);
    const ref = readJson(work, 'export.out.json') as { logits: Entry };
    const e = rel(ours.logits, loadF32(work, ref.logits));
    assert.ok(e <= 1e-5, `logits rel ${e}`);
    // The adapter is not a no-op: B moved away from 0.
    assert.ok(Object.values(model.adapter()).every((m) => m.B.some((v) => v !== 0)));
  });
});

describe('LoRA dropout', () => {
  // llama: LoRA on all seven projections; dora: PEFT's DoRA-with-dropout path (W·drop(x) recomputed).
  for (const id of ['llama', 'dora']) {
    it(`${id}: with our masks injected into PEFT: logits, loss, gradients and 2 AdamW steps match`, async () => {
      const c = cases.find((x) => x.id === id) as Case;
      const model = await loaded(c);
      model.setDropout(0.3, 77);
      const paths = Object.keys(model.adapter());
      const maskSet = (step: number, micro: number, n: number, tag: string): Record<string, Entry> =>
        Object.fromEntries(paths.map((p) => [p, saveF32(work, `mask.${tag}.${p}`, model.dropoutMask(p, step, micro, n), [n, -1])]));
      const steps = c.train.steps.slice(0, 2);
      const rowsSeq = (mb: { tokens: number[][] }) => mb.tokens.length * (mb.tokens[0]?.length ?? 0);
      const masks = {
        forward: maskSet(0, 0, rowsSeq(c), 'fwd'),
        steps: steps.map((step, s) => step.map((mb, k) => maskSet(s, k, rowsSeq(mb), `${s}.${k}`))),
      };
      const optimizer = { lr: 0.02, weightDecay: 0.1 };
      writeJson(work, 'dropout.json', { model: c.model, tokens: c.tokens, labels: c.labels, masks, optimizer, steps });
      runPython('train_ref.py', 'dropout', work);
      const ref = readJson(work, 'dropout.out.json') as Omit<Out, 'train'> & {
        train: { losses: number[]; params: Out['train']['params'] };
      };

      const r = await model.forward(toBatch(c.tokens, c.labels), { logits: true, backward: true, train: true });
      assert.ok(r.logits);
      assert.ok(rel(r.logits, loadF32(work, ref.logits)) <= 1e-5);
      assert.ok(Math.abs(r.loss - ref.loss) <= 1e-5 * ref.loss, `loss ${r.loss} vs ${ref.loss}`);
      const plain = await model.forward(toBatch(c.tokens, c.labels));
      assert.ok(Math.abs(plain.loss - r.loss) > 1e-4, 'dropout changes the training loss');
      const grads = model.gradients();
      for (const [path, g] of Object.entries(ref.grads)) {
        for (const [w, entry] of Object.entries(g) as [Param, Entry][]) {
          const mine = grads[path];
          assert.ok(mine);
          const e = rel(ours(mine, w), loadF32(work, entry));
          assert.ok(e <= 2e-5, `${path} grad ${w} rel ${e}`);
        }
      }
      for (const [s, step] of steps.entries()) {
        const res = await model.trainStep(
          step.map((mb) => toBatch(mb.tokens, mb.labels)),
          optimizer,
        );
        const want = ref.train.losses[s] ?? Number.NaN;
        assert.ok(Math.abs(res.loss - want) <= 1e-4 * want, `step ${s} loss ${res.loss} vs ${want}`);
      }
      const params = model.adapter();
      const mags = model.magnitudes();
      for (const [path, p] of Object.entries(ref.train.params)) {
        for (const [w, entry] of Object.entries(p) as [Param, Entry][]) {
          const mod = params[path];
          assert.ok(mod);
          const e = rel(ours({ ...mod, ...(mags[path] ? { magnitude: mags[path] } : {}) }, w), loadF32(work, entry));
          assert.ok(e <= 1e-4, `${path} ${w} after training rel ${e}`);
        }
      }
    });
  }
});

describe('PiSSA init (METHODS §1.4)', () => {
  it("matches PEFT's pissa init (s·BA, W_res); trained, its 2r export loads in PEFT on the original base", async () => {
    const c = cases[1] as Case; // qwen2 (biases, GQA)
    const targets = ['q_proj', 'v_proj', 'down_proj'] as const;
    writeJson(work, 'pissa.json', { model: c.model, r: 4, alpha: 8, targets, tokens: c.tokens });
    runPython('train_ref.py', 'pissa', work);
    const ref = readJson(work, 'pissa.out.json') as {
      modules: Record<string, { A: Entry; B: Entry; W: Entry }>;
      logitsBefore: Entry;
      logitsAfter: Entry;
    };
    const model = await TrainModel.load(join(work, c.model, 'base'));
    const mods = pissaInit(model, { r: 4, alpha: 8, targets });
    assert.deepEqual(Object.keys(mods).sort(), Object.keys(ref.modules).sort());
    for (const [path, r] of Object.entries(ref.modules)) {
      const m = mods[path];
      assert.ok(m);
      // Singular vectors are defined up to sign: compare the sign-free product s·BA.
      const peftDelta = delta64({ ...m, A: loadF32(work, r.A), B: loadF32(work, r.B) });
      const e = rel(delta64(m), peftDelta);
      assert.ok(e <= 1e-5, `${path} s·BA rel ${e}`);
      const w = rel(model.baseWeight(path), loadF32(work, r.W));
      assert.ok(w <= 1e-5, `${path} W_res rel ${w}`);
    }
    const out = await model.forward({ tokens: Int32Array.from(c.tokens.flat()), rows: 2, seq: 12 }, { logits: true });
    assert.ok(out.logits);
    assert.ok(rel(out.logits, loadF32(work, ref.logitsAfter)) <= 1e-5);
    assert.ok(rel(out.logits, loadF32(work, ref.logitsBefore)) <= 1e-5, 'W_res + s·BA = W');

    // Trained on W_res, exported at 2r (§0.5), loaded by PEFT on the original base.
    const initial = Object.fromEntries(Object.entries(mods).map(([k, m]) => [k, { ...m, A: m.A.slice(), B: m.B.slice() }]));
    for (const step of c.train.steps.slice(0, 2)) {
      await model.trainStep(
        step.map((mb) => toBatch(mb.tokens, mb.labels)),
        { lr: 0.01 },
      );
    }
    const dir = join(work, 'pissa-export');
    writePeftAdapter(dir, exportForOriginalBase(model.adapter(), initial));
    const trained = await model.forward({ tokens: Int32Array.from(c.tokens.flat()), rows: 2, seq: 12 }, { logits: true });
    assert.ok(trained.logits);
    assert.ok(rel(trained.logits, out.logits) > 1e-4, 'training moved the model');
    writeJson(work, 'export.json', { base: join(work, c.model, 'base'), adapter: dir, tokens: c.tokens });
    runPython('train_ref.py', 'peft-logits', work);
    const e = rel(trained.logits, loadF32(work, (readJson(work, 'export.out.json') as { logits: Entry }).logits));
    assert.ok(e <= 1e-5, `PEFT on the original base vs ours on W_res: logits rel ${e}`);
  });
});
